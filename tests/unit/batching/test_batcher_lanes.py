"""DynamicBatcher over a backend with two lanes: passes side by side, a pass alone on the
whole device, and never a pass beside one that holds the whole device.

The fake records each pass's lane (None: the whole device) and how many passes were in
its forward at once; passes can be held so that the overlap is decided by the test, not by
this machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fakes import FakeBatchedBackend
from test_batcher import Make, assert_scored, item, sample, until

from service.backends.base import BatchLayout, ForwardItem, ForwardResult
from service.batching.cost import BatchCost
from service.batching.lanes import MIN_PART_TOKENS, LaneBoard
from service.batching.pending import PendingItem
from service.errors import InternalError, Unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


class LanedBackend(FakeBatchedBackend):
    """Two lanes; records ``(lane, items)`` per pass and the passes in forward at once."""

    lanes = 2

    def __init__(self, **kw: Any) -> None:
        super().__init__(layout=BatchLayout.RAGGED, **kw)
        self.passes: list[tuple[int | None, list[ForwardItem]]] = []
        self.inside = 0
        self.most_inside = 0
        self.beside_whole = 0  # passes that ran while a whole-device pass did
        self._whole_running = False
        self._count = threading.Lock()

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        with self._count:
            self.passes.append((lane, list(items)))
            if self._whole_running or (lane is None and self.inside):
                self.beside_whole += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self._whole_running = self._whole_running or lane is None
        try:
            return super().forward(items, lane)
        finally:
            with self._count:
                self.inside -= 1
                if lane is None:
                    self._whole_running = False


def long_enough(tag: int) -> ForwardItem:
    """A window worth a lane of its own (``MIN_PART_TOKENS`` in the pass: its last token
    is not run)."""
    return item(MIN_PART_TOKENS + 1, tag)


async def test_a_lone_window_gets_the_whole_device(make: Make) -> None:
    batcher, backend = make(LanedBackend(), model="lanes-lone")
    items = [long_enough(10)]
    assert_scored(items, await asyncio.wait_for(batcher.submit(items), 5))
    assert [lane for lane, _ in backend.passes] == [None]  # type: ignore[attr-defined]
    passes = "lmscore_forward_passes_total"
    assert sample(passes, model="lanes-lone", share="whole") == 1
    assert sample(passes, model="lanes-lone", share="lane") == 0


async def test_a_batch_that_splits_evenly_runs_on_both_lanes_side_by_side(make: Make) -> None:
    backend = LanedBackend()
    batcher, _ = make(backend, model="lanes-split")
    backend.hold()
    items = [long_enough(tag) for tag in range(20, 26)]
    task = asyncio.create_task(batcher.submit(items))
    await until(lambda: backend.inside == 2)  # both passes in forward at once
    backend.release()
    assert_scored(items, await asyncio.wait_for(task, 5))
    assert sorted(lane for lane, _ in backend.passes) == [0, 1]  # type: ignore[type-var]
    assert [len(part) for _, part in backend.passes] == [3, 3]
    assert backend.beside_whole == 0
    assert sample("lmscore_forward_passes_total", model="lanes-split", share="lane") == 2


async def test_a_batch_too_small_to_split_gets_the_whole_device(make: Make) -> None:
    batcher, backend = make(LanedBackend())
    items = [item(MIN_PART_TOKENS // 4, tag) for tag in range(30, 34)]  # 1 part's worth
    assert_scored(items, await asyncio.wait_for(batcher.submit(items), 5))
    assert [(lane, len(part)) for lane, part in backend.passes] == [(None, 4)]  # type: ignore[attr-defined]


async def test_an_uneven_batch_gets_the_whole_device(make: Make) -> None:
    batcher, backend = make(LanedBackend())
    items = [item(10 * MIN_PART_TOKENS, 40), long_enough(41)]  # one lane would idle
    assert_scored(items, await asyncio.wait_for(batcher.submit(items), 5))
    assert [(lane, len(part)) for lane, part in backend.passes] == [(None, 2)]  # type: ignore[attr-defined]


async def test_work_beside_a_busy_lane_runs_on_the_other_lane(make: Make) -> None:
    """With more queued than one pass takes, each lane takes its own batch: neither may
    have the whole device, even a lone window."""
    backend = LanedBackend()
    batcher, _ = make(backend, max_batch_size=2)
    backend.hold()
    first = asyncio.create_task(batcher.submit([item(3, tag) for tag in (50, 51, 52)]))
    await until(lambda: backend.inside == 2)
    backend.release()
    await asyncio.wait_for(first, 5)
    lanes = [lane for lane, _ in backend.passes]  # type: ignore[attr-defined]
    assert sorted(lanes) == [0, 1] and backend.most_inside == 2


async def test_nothing_runs_beside_a_pass_on_the_whole_device(make: Make) -> None:
    backend = LanedBackend()
    batcher, _ = make(backend)
    backend.hold()
    lone = asyncio.create_task(batcher.submit([item(3, 60)]))
    await until(lambda: backend.inside == 1)
    later = [asyncio.create_task(batcher.submit([long_enough(tag)])) for tag in range(61, 65)]
    await asyncio.sleep(0.1)  # the idle lane must not start beside it
    assert len(backend.passes) == 1 and backend.passes[0][0] is None  # type: ignore[attr-defined]
    backend.release()
    await asyncio.wait_for(asyncio.gather(lone, *later), 5)
    assert backend.beside_whole == 0 and len(backend.passes) >= 2


async def test_closing_fails_the_passes_on_every_lane(make: Make) -> None:
    backend = LanedBackend()
    batcher, _ = make(backend)
    backend.hold()
    task = asyncio.create_task(batcher.submit([long_enough(70), long_enough(71)]))
    await until(lambda: backend.inside == 2)
    closing = asyncio.create_task(batcher.close(wait_s=5))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(task, 5)
    backend.release()
    await asyncio.wait_for(closing, 5)


async def test_a_failing_part_fails_only_its_own_windows(make: Make) -> None:
    backend = LanedBackend(fail_on=999)
    batcher, _ = make(backend)
    backend.hold()
    good = [long_enough(tag) for tag in range(80, 85)]
    bad = [item(MIN_PART_TOKENS, 999)]
    tasks = [asyncio.create_task(batcher.submit([it])) for it in good]
    failing = asyncio.create_task(batcher.submit(bad))
    await until(lambda: backend.inside >= 1)
    backend.release()
    for it, task in zip(good, tasks, strict=True):
        assert_scored([it], await asyncio.wait_for(task, 5))
    with pytest.raises(InternalError, match="marker token"):
        await asyncio.wait_for(failing, 5)
    assert backend.beside_whole == 0


async def test_a_lane_may_take_an_even_share_of_the_outstanding_work() -> None:
    ragged = BatchCost(BatchLayout.RAGGED)
    board = LaneBoard(lanes=2)
    assert LaneBoard(lanes=1).fair_share(0, [900] * 4, ragged, budget=1000) is None
    # Nothing runs and the queue fits one batch: no cap (split_evenly shares it out).
    assert board.fair_share(0, [300, 300, 300], ragged, budget=1000) is None
    # More than one batch queued: half of it each.
    assert board.fair_share(0, [300] * 5, ragged, budget=1000) == 750
    board.start(1, [sample_item(400)], whole=False)
    assert board.fair_share(0, [300, 300], ragged, budget=1000) == 500  # (600 + 400) / 2
    small = LaneBoard(lanes=2)
    small.start(1, [sample_item(50)], whole=False)
    assert small.fair_share(0, [10], ragged, budget=1000) == MIN_PART_TOKENS  # not 30
    # The lane's own pass does not count against it.
    assert board.fair_share(1, [300, 300], ragged, budget=1000) is None


def sample_item(length: int) -> PendingItem:
    """A pending window whose pass runs ``length`` tokens (its last token is not run)."""
    return PendingItem(item(length + 1, 0), asyncio.get_running_loop().create_future(), 0.0)


async def test_a_queue_over_one_batch_is_shared_by_the_lanes_not_hoarded(make: Make) -> None:
    """Both lanes idle and more queued than one pass holds: each lane takes half, where
    the first would have taken a whole budget and left the other almost nothing."""
    backend = LanedBackend()
    batcher, _ = make(backend, max_batch_tokens=10 * MIN_PART_TOKENS)
    backend.hold()
    items = [long_enough(tag) for tag in range(80, 92)]  # 12 windows, 1.2 budgets
    task = asyncio.create_task(batcher.submit(items))
    await until(lambda: backend.inside == 2)
    backend.release()
    assert_scored(items, await asyncio.wait_for(task, 5))
    assert [len(part) for _, part in backend.passes] == [6, 6]
    assert all(lane is not None for lane, _ in backend.passes)
