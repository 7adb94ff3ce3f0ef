"""PassThroughScheduler over a fake self-batching backend: order, admission, deadlines,
cancellation (which must reach the backend) and metrics.

The fake backend's ``score`` is a coroutine that can be held, so items stay in flight for
as long as a test needs, without relying on this machine's speed.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from fakes import FakeSelfBatchingBackend, fake_result

from service import metrics
from service.backends.base import ForwardItem
from service.batching.passthrough import PassThroughScheduler
from service.errors import Overloaded, Timeout, Unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


def item(length: int, tag: int) -> ForwardItem:
    """A window of ``length`` copies of token ``tag``, every token after the first scored."""
    return ForwardItem((tag,) * length, 1)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def scheduler(
    model: str, max_queue: int = 8
) -> tuple[PassThroughScheduler, FakeSelfBatchingBackend]:
    backend = FakeSelfBatchingBackend()
    return PassThroughScheduler(backend, model, max_queue=max_queue), backend


async def test_results_come_back_in_order_with_metrics() -> None:
    model = "passthrough-order"
    sched, backend = scheduler(model)
    items = [item(5, 7), item(2, 3), item(9, 11)]
    await sched.warmup()
    scored = await sched.submit(items, deadline=time.monotonic() + 5)
    assert backend.warmed == 1
    assert backend.calls == [items]
    for it, out in zip(items, scored, strict=True):
        np.testing.assert_array_equal(out.result.logprobs, fake_result(it).logprobs)
    assert sample("lmscore_tokens_scored_total", model=model) == 4 + 1 + 8
    assert sample("lmscore_inference_duration_seconds_count", model=model) == 1
    assert sched.queue_depth == 0
    assert sample("lmscore_queue_depth", model=model) == 0


async def test_a_full_queue_refuses_with_retry_after_and_a_lone_big_request_is_taken() -> None:
    model = "passthrough-full"
    sched, backend = scheduler(model, max_queue=4)
    backend.hold()
    big = asyncio.create_task(sched.submit([item(3, t) for t in range(6)]))
    await asyncio.wait_for(backend.called.wait(), 5)
    assert sched.queue_depth == 6
    assert sample("lmscore_queue_depth", model=model) == 6
    with pytest.raises(Overloaded) as refused:
        await sched.submit([item(3, 1)])
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
    with pytest.raises(Overloaded), sched.reserve(1):  # the engine's hold before tokenizing
        pass
    backend.release()
    assert len(await big) == 6
    assert sched.queue_depth == 0
    with sched.reserve(1):  # room again
        pass
    assert len(await sched.submit([item(3, 1)] * 4)) == 4


async def test_a_deadline_passing_in_the_backend_times_out_and_aborts_there() -> None:
    sched, backend = scheduler("passthrough-deadline")
    backend.hold()
    with pytest.raises(Timeout):
        await sched.submit([item(4, 2)], deadline=time.monotonic() + 0.05)
    assert backend.aborted == 1
    assert sched.queue_depth == 0


async def test_a_cancelled_caller_aborts_its_items_in_the_backend() -> None:
    sched, backend = scheduler("passthrough-cancel")
    backend.hold()
    caller = asyncio.create_task(sched.submit([item(4, 2), item(4, 3)]))
    await asyncio.wait_for(backend.called.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert backend.aborted == 1
    assert sched.queue_depth == 0
    backend.release()


async def test_a_caller_cancelled_as_the_backend_finishes_stays_cancelled() -> None:
    # On Python 3.11 asyncio.wait_for returns the result when the cancel lands after the
    # awaited work finished: the cancel was lost, and the caller went on as if it had not
    # been cancelled (a request counted as answered whose client had gone).
    sched, backend = scheduler("passthrough-race")
    caller = asyncio.create_task(sched.submit([item(4, 2)], deadline=time.monotonic() + 5))
    backend.on_finish = caller.cancel
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert sched.queue_depth == 0


async def test_closed_refuses_and_closes_the_backend_once() -> None:
    sched, backend = scheduler("passthrough-closed")
    await sched.close()
    assert backend.closed == 1
    with pytest.raises(Unavailable):
        await sched.submit([item(3, 1)])
    assert backend.calls == []


async def test_close_lets_work_in_flight_finish() -> None:
    """Work in flight when the server stops is given the grace period to finish."""
    sched, backend = scheduler("passthrough-drain")
    backend.hold()
    caller = asyncio.create_task(sched.submit([item(4, 2)]))
    await asyncio.wait_for(backend.called.wait(), 5)
    closing = asyncio.create_task(sched.close(wait_s=10))
    await asyncio.sleep(0.05)
    assert backend.closed == 0  # not under work in flight
    backend.release()
    [scored] = await asyncio.wait_for(caller, 5)
    np.testing.assert_array_equal(scored.result.logprobs, fake_result(item(4, 2)).logprobs)
    await asyncio.wait_for(closing, 5)
    assert backend.closed == 1 and backend.aborted == 0


async def test_close_stops_work_still_in_flight_after_the_grace_period() -> None:
    """Stopping vLLM's engine under a call in flight left that call waiting for good
    (its client until the connection was cut). After the grace period the work is
    aborted in the backend and its caller told the model is shutting down."""
    sched, backend = scheduler("passthrough-stop")
    backend.hold()
    caller = asyncio.create_task(sched.submit([item(4, 2), item(4, 3)]))
    await asyncio.wait_for(backend.called.wait(), 5)
    await asyncio.wait_for(sched.close(wait_s=0.05), 5)
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(caller, 5)
    assert backend.aborted == 1 and backend.closed == 1
    assert sched.queue_depth == 0


async def test_nothing_to_score_never_reaches_the_backend() -> None:
    """A request with no window (every text too short to score) costs no engine call and
    is not counted as an inference, as with the dynamic batcher."""
    model = "passthrough-empty"
    sched, backend = scheduler(model)
    assert await sched.submit([], deadline=time.monotonic() + 5) == []
    assert backend.calls == []
    assert sample("lmscore_inference_duration_seconds_count", model=model) == 0
