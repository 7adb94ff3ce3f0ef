"""DynamicBatcher over a fake backend: batch formation, routing, drops, failures, metrics.

The fake backend scores every token ``t`` as ``-t / 1000`` and records each batch it was
given. Its forward can be held (``hold``/``release``) so that items pile up behind a busy
worker deterministically, without relying on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fakes import FakeBatchedBackend, fake_result
from tolerances import BATCH_INVARIANCE_REL

from service import metrics
from service.backends.base import BatchLayout, ForwardItem, ForwardResult
from service.batching.batcher import DynamicBatcher
from service.batching.pending import ScoredItem
from service.engine import Engine
from service.errors import InternalError, Overloaded, Timeout, Unavailable
from service.schemas import TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


DROPPED = "lmscore_batch_items_dropped_total"


def item(length: int, tag: int, score_from: int = 1) -> ForwardItem:
    """A window of ``length`` copies of token ``tag`` (tags tell items apart)."""
    return ForwardItem((tag,) * length, score_from)


def expected(it: ForwardItem) -> np.ndarray:
    return fake_result(it).logprobs


Make = Callable[..., tuple[DynamicBatcher, FakeBatchedBackend]]  # the conftest fixture


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def occupy(batcher: DynamicBatcher, backend: FakeBatchedBackend) -> asyncio.Task[Any]:
    """Hold the worker on a one-item batch (tag 1) so later submits wait in the queue."""
    backend.hold()
    task = asyncio.create_task(batcher.submit([item(3, 1)]))
    await until(lambda: len(backend.batches) == 1)
    return task


def submit_later(batcher: DynamicBatcher, items: list[ForwardItem], **kw: Any) -> asyncio.Task[Any]:
    return asyncio.create_task(batcher.submit(items, **kw))


def assert_scored(items: list[ForwardItem], scored: list[ScoredItem]) -> None:
    assert len(scored) == len(items)
    for it, out in zip(items, scored, strict=True):
        np.testing.assert_array_equal(out.result.logprobs, expected(it))


async def test_max_batch_size(make: Make) -> None:
    # A long window: full batches leave at once, and a slow machine cannot split them.
    batcher, backend = make(max_batch_size=4, max_wait_ms=1000)
    items = [item(3, tag) for tag in range(10, 20)]
    results = await asyncio.gather(*(batcher.submit([it]) for it in items))
    for it, scored in zip(items, results, strict=True):
        assert_scored([it], scored)
    assert sorted(map(len, backend.batches), reverse=True) == [4, 4, 2]


async def test_max_batch_tokens(make: Make) -> None:
    batcher, backend = make(max_batch_tokens=64, max_wait_ms=1000)
    await asyncio.gather(*(batcher.submit([item(20, tag)]) for tag in range(10, 20)))
    assert sum(map(len, backend.batches)) == 10
    for batch in backend.batches:
        assert max(len(it.input_ids) for it in batch) * len(batch) <= 64
    assert max(map(len, backend.batches)) == 3


async def test_oversized_item_runs_alone(make: Make) -> None:
    batcher, backend = make(max_batch_tokens=64, max_wait_ms=50)
    long_item, short = item(100, 50), [item(5, 51), item(5, 52)]
    got_long, got_short = await asyncio.gather(batcher.submit([long_item]), batcher.submit(short))
    assert_scored([long_item], got_long)
    assert_scored(short, got_short)
    assert [batch for batch in backend.batches if batch[0].input_ids[0] == 50] == [[long_item]]


async def test_max_wait_gathers_items_arriving_together(make: Make) -> None:
    batcher, backend = make(max_wait_ms=1000)
    tasks = []
    for tag in range(10, 15):
        tasks.append(submit_later(batcher, [item(4, tag)]))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert [len(b) for b in backend.batches] == [5]
    [alone] = await batcher.submit([item(4, 20)])
    assert alone.timing.queue_s >= 0.9  # a lone item waits for company


async def test_zero_wait_still_batches_behind_a_busy_worker(make: Make) -> None:
    batcher, backend = make(max_wait_ms=0)
    blocker = await occupy(batcher, backend)
    tasks = []
    for tag in range(20, 25):
        tasks.append(submit_later(batcher, [item(4, tag)]))
        await asyncio.sleep(0.01)
    await until(lambda: batcher.queue_depth == 5)
    backend.release()
    await asyncio.gather(blocker, *tasks)
    assert [len(b) for b in backend.batches] == [1, 5]


async def test_length_grouping(make: Make) -> None:
    batcher, backend = make(model="grouping", max_batch_size=8)
    blocker = await occupy(batcher, backend)
    tasks = [submit_later(batcher, [item(5 if k % 2 == 0 else 100, 100 + k)]) for k in range(16)]
    await until(lambda: batcher.queue_depth == 16)
    backend.release()
    await asyncio.gather(blocker, *tasks)
    later = backend.batches[1:]
    assert [len(b) for b in later] == [8, 8]
    assert [{len(it.input_ids) for it in b} for b in later] == [{5}, {100}]
    assert sample("lmscore_padding_ratio_sum", model="grouping") == 0.0


async def test_ragged_budget_counts_real_tokens_in_arrival_order(make: Make) -> None:
    backend = FakeBatchedBackend(layout=BatchLayout.RAGGED)
    batcher, _ = make(backend, model="ragged", max_batch_tokens=120, max_batch_size=8)
    blocker = await occupy(batcher, backend)
    lengths = [5, 100, 5, 5, 100, 5]
    tasks = []
    for k, length in enumerate(lengths):
        tasks.append(submit_later(batcher, [item(length, 200 + k)]))
        await asyncio.sleep(0.005)  # distinct arrival times
    await until(lambda: batcher.queue_depth == len(lengths))
    backend.release()
    await asyncio.gather(blocker, *tasks)
    later = [[it.input_ids[0] - 200 for it in b] for b in backend.batches[1:]]
    # Oldest first, skipping what does not fit. A window's last token is not run (it
    # predicts nothing), so the budget counts 4 + 99 + 4 + 4 + 4 = 115 (the second 99
    # would not fit); a padded batch of those would have cost 5 x 99.
    assert later == [[0, 1, 2, 3, 5], [4]]
    assert sample("lmscore_padding_ratio_sum", model="ragged") == 0.0
    assert sample("lmscore_batch_tokens_sum", model="ragged") == 2 + 115 + 99


class SteppedBackend(FakeBatchedBackend):
    """Runs one forward pass per ``step()``: the test decides what arrives between passes."""

    def __init__(self, layout: BatchLayout) -> None:
        super().__init__(layout=layout)
        self._steps = threading.Semaphore(0)

    def step(self) -> None:
        self._steps.release()

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        self.batches.append(list(items))
        assert self._steps.acquire(timeout=10), "no step() within 10 s"
        return [fake_result(it) for it in items]


async def run_steps(backend: SteppedBackend, *tasks: asyncio.Task[Any], stepped: int = 0) -> None:
    """Let each forward pass run in turn until ``tasks`` are done (``stepped`` passes have
    been let through already)."""
    while True:
        await until(lambda s=stepped: len(backend.batches) > s or all(t.done() for t in tasks))  # type: ignore[misc]
        if len(backend.batches) == stepped:
            break
        backend.step()
        stepped += 1
    await asyncio.gather(*tasks)


def batch_tags(backend: FakeBatchedBackend) -> list[list[int]]:
    return [[it.input_ids[0] for it in batch] for batch in backend.batches]


@pytest.mark.parametrize("layout", [BatchLayout.RAGGED, BatchLayout.PADDED])
async def test_a_small_request_does_not_wait_behind_a_large_one(
    make: Make, layout: BatchLayout
) -> None:
    """Fair order: 40 windows of one request (four batches' worth) queued first, then a
    one-window request: it runs in the next batch, not after all 40; the large request's
    windows still run in their own order."""
    backend = SteppedBackend(layout)
    batcher, _ = make(backend, max_batch_tokens=100, max_batch_size=64)
    first = submit_later(batcher, [item(3, 1)])
    await until(lambda: len(backend.batches) == 1)  # the worker is busy: the rest queues
    large = [item(10, 100 + k) for k in range(40)]  # 9 tokens run each: 11 per batch
    large_task = submit_later(batcher, large)
    await until(lambda: batcher.queue_depth == 40)
    small_task = submit_later(batcher, [item(10, 7)])
    await until(lambda: batcher.queue_depth == 41)
    await run_steps(backend, first, large_task, small_task)
    served = batch_tags(backend)[1:]
    assert 7 in served[0], served  # the batch after the one in flight
    assert [t for batch in served for t in batch if t != 7] == list(range(100, 140))
    assert sum(map(len, served)) == 41


async def test_requests_of_up_to_a_batch_keep_their_arrival_order(make: Make) -> None:
    """Fair order changes nothing while each request fits a batch: first come, first
    served, a request's windows together."""
    backend = SteppedBackend(BatchLayout.RAGGED)
    batcher, _ = make(backend, max_batch_tokens=100, max_batch_size=64)
    first = submit_later(batcher, [item(3, 1)])
    await until(lambda: len(backend.batches) == 1)
    tasks = []
    for r in range(5):  # 4 windows of 9 tokens each: 36 tokens a request
        tasks.append(submit_later(batcher, [item(10, 10 * r + k) for k in range(10, 14)]))
        await until(lambda r=r: batcher.queue_depth == 4 * (r + 1))  # type: ignore[misc]
    await run_steps(backend, first, *tasks)
    served = [t for batch in batch_tags(backend)[1:] for t in batch]
    assert served == [10 * r + k for r in range(5) for k in range(10, 14)]


async def test_a_large_request_keeps_moving_under_a_stream_of_small_ones(make: Make) -> None:
    """Small requests arriving before every batch do not starve a large one: it gets
    half a batch at least in every batch."""
    backend = SteppedBackend(BatchLayout.RAGGED)
    batcher, _ = make(backend, max_batch_tokens=100, max_batch_size=64)
    first = submit_later(batcher, [item(3, 1)])
    await until(lambda: len(backend.batches) == 1)
    large_task = submit_later(batcher, [item(10, 100 + k) for k in range(44)])  # 4 batches
    await until(lambda: batcher.queue_depth == 44)
    small: list[asyncio.Task[Any]] = []
    stepped = 0
    while not large_task.done() and stepped < 12:
        queued = batcher.queue_depth
        small += [submit_later(batcher, [item(10, 2 + j)]) for j in range(3)]  # 27 tokens
        await until(lambda q=queued: batcher.queue_depth == q + 3)  # type: ignore[misc]
        backend.step()  # the pass under way ends; the worker takes the next batch
        stepped += 1
        await until(lambda s=stepped: len(backend.batches) > s or large_task.done())  # type: ignore[misc]
    await run_steps(backend, first, large_task, *small, stepped=stepped)
    served = batch_tags(backend)[1:]
    last = max(i for i, batch in enumerate(served) if any(t >= 100 for t in batch))
    # Half a batch (5 of its 9-token windows, 45 of the 100 tokens) at least, every batch.
    assert all(sum(t >= 100 for t in batch) >= 5 for batch in served[:last]), served


async def test_worker_takes_the_next_batch_while_the_event_loop_is_busy(make: Make) -> None:
    """The forward thread forms and runs the next batch by itself: a blocked event loop
    (say, encoding a large response) does not stall it."""
    batcher, backend = make(max_wait_ms=0)
    blocker = await occupy(batcher, backend)
    queued = submit_later(batcher, [item(4, 30)])
    await until(lambda: batcher.queue_depth == 1)
    threading.Timer(0.05, backend.release).start()
    # Block the event loop on purpose (the worker must not need it), until the worker has
    # run the next batch or 10 s have passed.
    blocked_until = time.monotonic() + 10
    while len(backend.batches) < 2 and time.monotonic() < blocked_until:
        time.sleep(0.01)  # noqa: ASYNC251
    assert len(backend.batches) == 2
    await asyncio.gather(blocker, queued)


async def test_results_routed_to_their_callers_in_order(make: Make) -> None:
    batcher, backend = make(max_batch_size=5)
    blocker = await occupy(batcher, backend)
    requests = [
        [item(3 + (7 * c + j) % 11, 200 + 10 * c + j) for j in range(1 + c % 4)] for c in range(8)
    ]
    tasks = [submit_later(batcher, items) for items in requests]
    await until(lambda: batcher.queue_depth == sum(map(len, requests)))
    backend.release()
    await blocker
    for items, scored in zip(requests, await asyncio.gather(*tasks), strict=True):
        assert_scored(items, scored)
    assert len(backend.batches) > 3


async def test_cancelled_caller_items_are_dropped(make: Make) -> None:
    batcher, backend = make(model="cancel")
    before = sample("lmscore_batch_items_dropped_total", model="cancel", reason="cancelled")
    blocker = await occupy(batcher, backend)
    victim = submit_later(batcher, [item(4, 555), item(6, 556)])
    bystander = submit_later(batcher, [item(4, 557)])
    await until(lambda: batcher.queue_depth == 3)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    backend.release()
    await blocker
    assert_scored([item(4, 557)], await bystander)
    assert backend.tags().isdisjoint({555, 556}) and 557 in backend.tags()
    assert (
        sample("lmscore_batch_items_dropped_total", model="cancel", reason="cancelled")
        >= before + 2
    )
    assert batcher.queue_depth == 0
    assert sample("lmscore_queue_depth", model="cancel") == 0


async def test_deadline_passed_while_queued(make: Make) -> None:
    batcher, backend = make()
    blocker = await occupy(batcher, backend)
    doomed = submit_later(batcher, [item(4, 666)], deadline=time.monotonic() + 0.05)
    fine = submit_later(batcher, [item(4, 667)], deadline=time.monotonic() + 60)
    await until(lambda: batcher.queue_depth == 2)
    await asyncio.sleep(0.2)
    backend.release()
    with pytest.raises(Timeout):
        await doomed
    assert_scored([item(4, 667)], await fine)
    await blocker
    with pytest.raises(Timeout):
        await batcher.submit([item(4, 668)], deadline=time.monotonic() - 1)
    assert backend.tags().isdisjoint({666, 668})


async def test_a_caller_that_timed_out_at_its_deadline_counts_as_expired(make: Make) -> None:
    """The engine stops waiting at the deadline (its wait is cancelled), so the queued
    items are both abandoned and expired: they count as expired."""
    batcher, backend = make(model="expire")
    labels = {"model": "expire"}
    before = {r: sample(DROPPED, reason=r, **labels) for r in ("expired", "cancelled")}
    blocker = await occupy(batcher, backend)
    deadline = time.monotonic() + 0.05
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit([item(4, 777), item(5, 778)], deadline), 0.05)
    await asyncio.sleep(0.1)
    backend.release()
    await blocker
    await until(lambda: batcher.queue_depth == 0)
    assert sample(DROPPED, reason="expired", **labels) == before["expired"] + 2
    assert sample(DROPPED, reason="cancelled", **labels) == before["cancelled"]
    assert backend.tags().isdisjoint({777, 778})


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_items_of_a_caller_that_left_free_the_queue_at_once(make: Make, how: str) -> None:
    """While a forward pass still runs, a caller that stops waiting (a disconnect, its
    deadline) takes its queued items out: the next caller is admitted, not told the queue
    is full of work nobody waits for."""
    batcher, backend = make(model=f"left-{how}", max_queue=4)
    blocker = await occupy(batcher, backend)
    gone = [item(4, 880 + k) for k in range(4)]
    if how == "cancelled":
        task = submit_later(batcher, gone)
        await until(lambda: batcher.queue_depth == 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        deadline = time.monotonic() + 0.05
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(gone, deadline), 0.06)
    assert len(backend.batches) == 1  # the first pass still runs
    assert batcher.queue_depth == 0
    newcomer = submit_later(batcher, [item(4, 890 + k) for k in range(4)])
    await until(lambda: batcher.queue_depth == 4)
    backend.release()
    await blocker
    assert len(await newcomer) == 4
    assert backend.tags().isdisjoint({880, 881, 882, 883})
    reason = "cancelled" if how == "cancelled" else "expired"
    assert sample(DROPPED, model=f"left-{how}", reason=reason) == 4


async def test_a_failing_item_fails_alone(make: Make) -> None:
    # The failing batch runs again in halves: the item the model cannot take fails, the
    # requests that shared its batch are answered (they all failed before).
    batcher, backend = make(FakeBatchedBackend(fail_on=999), max_batch_size=4)
    blocker = await occupy(batcher, backend)
    bad = submit_later(batcher, [item(4, 999)])
    await until(lambda: batcher.queue_depth == 1)
    partner = submit_later(batcher, [item(4, 11)])  # shares the failing batch
    both = submit_later(batcher, [item(4, 12), item(4, 13)])  # one half with the bad item
    await until(lambda: batcher.queue_depth == 4)
    backend.release()
    await blocker
    with pytest.raises(InternalError, match="RuntimeError"):
        await bad
    assert_scored([item(4, 11)], await partner)
    assert_scored([item(4, 12), item(4, 13)], await both)
    runs = [sorted(it.input_ids[0] for it in b) for b in backend.batches[1:]]
    assert runs == [[11, 12, 13, 999], [11, 999], [999], [11], [12, 13]]
    assert_scored([item(4, 14)], await batcher.submit([item(4, 14)]))  # the loop survived


@pytest.mark.parametrize(
    "order",
    [
        (999, 11, 999, 12),  # a bad item in each half: the halves used to share one budget
        (999, 999, 11, 12),
        (11, 999, 12, 999, 13, 999, 14, 15),
        (11, 12, 13, 14, 15, 16, 999, 999),
        (999, 999, 999, 999, 11, 12, 13, 14),  # one request's bad texts, side by side
    ],
)
async def test_every_bad_item_fails_alone_however_many(make: Make, order: tuple[int, ...]) -> None:
    """Once a part of the failed batch has passed, the model works: every failing part is
    split down to its bad items, and no request that shared their batch fails. Before any
    part passes, splitting is capped (a broken model fails fast), but every half still
    runs once: bad items filling the first half cannot fail the second unrun."""
    batcher, backend = make(FakeBatchedBackend(fail_on=999), max_batch_size=len(order))
    blocker = await occupy(batcher, backend)
    callers = [submit_later(batcher, [item(4, tag)]) for tag in order]
    await until(lambda: batcher.queue_depth == len(order))
    backend.release()
    await blocker
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    for tag, outcome in zip(order, outcomes, strict=True):
        if tag == 999:
            assert isinstance(outcome, InternalError), outcome
        else:
            assert not isinstance(outcome, BaseException), (tag, outcome)
            assert_scored([item(4, tag)], outcome)


async def test_a_model_failing_every_pass_fails_its_batch_fast(make: Make) -> None:
    # Halving without a cap ran 2N - 1 passes (15 for 8 items), each failing, while the
    # queue behind waited; the cap is what isolating one item takes: 2 per halving.
    batcher, backend = make(FakeBatchedBackend(fail_on=999), max_batch_size=8)
    blocker = await occupy(batcher, backend)
    callers = [submit_later(batcher, [item(4, 999)]) for _ in range(8)]
    await until(lambda: batcher.queue_depth == 8)
    backend.release()
    await blocker
    for caller in callers:
        with pytest.raises(InternalError, match="marker token"):
            await caller
    # The first pass, the capped splitting (2 per level), and one run of each half left
    # when the cap is reached: 9 passes for 8 items, against 15 without a cap.
    assert len(backend.batches) - 1 <= 1 + 3 * 3


async def test_a_failing_batch_of_one_request_fails_it(make: Make) -> None:
    batcher, _ = make(FakeBatchedBackend(fail_on=999))
    with pytest.raises(InternalError, match="marker token"):
        await asyncio.wait_for(batcher.submit([item(4, 21), item(4, 999), item(4, 22)]), 5)


class ShortBackend(FakeBatchedBackend):
    """Returns one result too few: a backend bug must fail the batch, not hang it."""

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        return super().forward(items, lane)[:-1]


async def test_backend_returning_too_few_results_fails_the_batch(make: Make) -> None:
    batcher, _ = make(ShortBackend())
    with pytest.raises(InternalError):
        await asyncio.wait_for(batcher.submit([item(4, 15), item(4, 16)]), 5)


async def test_overloaded_queue(make: Make) -> None:
    batcher, backend = make(max_queue=2)
    blocker = await occupy(batcher, backend)
    burst = [submit_later(batcher, [item(4, 30 + k)]) for k in range(5)]
    await until(lambda: sum(t.done() for t in burst) == 3)
    with pytest.raises(Overloaded):  # too large for a non-empty queue
        await batcher.submit([item(4, 40 + k) for k in range(5)])
    with pytest.raises(Overloaded), batcher.reserve(1):  # the engine's hold before tokenizing
        pass
    backend.release()
    outcomes = await asyncio.gather(blocker, *burst, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(refused) == 3
    assert all(e.retry_after_s is not None and e.retry_after_s >= 1 for e in refused)
    assert all(isinstance(o, list) for o in outcomes if o not in refused)
    with batcher.reserve(1):  # room again
        pass
    big = [item(4, 50 + k) for k in range(5)]  # larger than max_queue, into an empty queue
    assert_scored(big, await batcher.submit(big))


async def test_close_fails_waiting_and_refuses_new(make: Make) -> None:
    batcher, backend = make(model="closing")
    blocker = await occupy(batcher, backend)
    waiting = submit_later(batcher, [item(4, 70)])
    await until(lambda: batcher.queue_depth == 1)
    await batcher.close()
    with pytest.raises(Unavailable):
        await waiting
    with pytest.raises(Unavailable):  # the batch in the forward pass is not left hanging
        await asyncio.wait_for(blocker, 5)
    with pytest.raises(Unavailable):
        await batcher.submit([item(4, 71)])
    backend.release()
    assert backend.tags().isdisjoint({70, 71})
    assert sample("lmscore_queue_depth", model="closing") == 0


async def test_batch_metrics(make: Make) -> None:
    model = "batch-metrics"
    names = ("batch_size", "batch_tokens", "padding_ratio", "inference_duration_seconds")
    before = {n: sample(f"lmscore_{n}_count", model=model) for n in names}
    queued = sample("lmscore_queue_duration_seconds_count", model=model)
    scored = sample("lmscore_tokens_scored_total", model=model)
    batcher, backend = make(model=model, max_batch_size=3, max_wait_ms=20)
    items = [item(6, 80 + k, score_from=2) for k in range(7)]
    await asyncio.gather(*(batcher.submit([it]) for it in items))
    batches = len(backend.batches)
    assert batches >= 3
    for n in names:
        assert sample(f"lmscore_{n}_count", model=model) - before[n] == batches
    assert sample("lmscore_queue_duration_seconds_count", model=model) - queued == 7
    assert sample("lmscore_tokens_scored_total", model=model) - scored == 7 * 4
    assert sample("lmscore_batch_size_sum", model=model) >= 7
    assert sample("lmscore_queue_depth", model=model) == 0


TEXTS = [
    "hello world",
    "the quick brown fox jumps over a lazy dog",
    "Grüße aus München café naïve façade",
    "Привет мир как дела спасибо хорошо",
    "日本語 テキスト 😀 🚀 🎉 123 4567 89",
    "a",
    "the model scores every token hello world assistant user system text",
    "bits per byte char 'quoted' \"double\" ! ? , . : ;",
]


async def test_batching_does_not_change_scores(
    tiny_engine: Engine, engine_factory: Callable[..., Engine]
) -> None:
    async def sums(engine: Engine, text: str) -> float:
        outcome = await engine.score_text(TextScoreRequest(texts=[text], prepend_bos=True))
        return outcome.response.results[0].sum_logprob

    alone = [await sums(tiny_engine, text) for text in TEXTS]
    engine = engine_factory(max_wait_ms=300)
    count = sample("lmscore_batch_size_count", model="default")
    total = sample("lmscore_batch_size_sum", model="default")
    together = await asyncio.gather(*(sums(engine, text) for text in TEXTS))
    assert sample("lmscore_batch_size_sum", model="default") - total == len(TEXTS)
    assert sample("lmscore_batch_size_count", model="default") - count < len(TEXTS)
    for a, b in zip(alone, together, strict=True):
        assert a != 0 and abs(a - b) <= BATCH_INVARIANCE_REL * abs(a)
