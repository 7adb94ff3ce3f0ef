"""Queue room held from admission to submit, on both schedulers: a hold counts against
other requests, becomes the holder's queued windows when it submits (from any task it
started), and is given back when the request ends without submitting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from fakes import FakeBatchedBackend, FakeSelfBatchingBackend

from service.backends.base import BatchLayout, ForwardItem
from service.batching.batcher import DynamicBatcher
from service.batching.passthrough import PassThroughScheduler
from service.batching.scheduler import Scheduler
from service.errors import Overloaded

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_QUEUE = 4


def windows(count: int) -> list[ForwardItem]:
    return [ForwardItem((5, 6, 7), 1) for _ in range(count)]


@pytest_asyncio.fixture(loop_scope="session", params=["batched", "self-batching"])
async def sched(request: pytest.FixtureRequest) -> AsyncIterator[Scheduler]:
    made: Scheduler
    if request.param == "batched":
        made = DynamicBatcher(
            FakeBatchedBackend(layout=BatchLayout.RAGGED),
            "holds-batched",
            max_batch_tokens=10_000,
            max_batch_size=64,
            max_wait_ms=0,
            max_queue=MAX_QUEUE,
        )
    else:
        made = PassThroughScheduler(
            FakeSelfBatchingBackend(), "holds-self-batching", max_queue=MAX_QUEUE
        )
    yield made
    await made.close()


async def in_another_task(fn: Callable[[], object]) -> None:
    """``fn()`` in a task of its own, as another request would run it."""

    async def run() -> None:
        fn()

    await asyncio.create_task(run())


def enter(sched: Scheduler, count: int) -> Callable[[], None]:
    def reserve() -> None:
        with sched.reserve(count):
            pass

    return reserve


async def test_a_hold_refuses_others_until_its_request_submits(sched: Scheduler) -> None:
    with sched.reserve(3):
        with pytest.raises(Overloaded) as refused:
            await in_another_task(enter(sched, 2))
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
        await in_another_task(enter(sched, 1))  # 3 + 1 fit
        scored = await sched.submit(windows(1))  # fewer than held: the rest is free again
        assert len(scored) == 1
        await in_another_task(enter(sched, MAX_QUEUE))


async def test_a_request_ending_before_it_submits_gives_its_hold_back(
    sched: Scheduler,
) -> None:
    with pytest.raises(ValueError), sched.reserve(MAX_QUEUE):
        raise ValueError("refused while tokenizing")
    with sched.reserve(MAX_QUEUE):
        assert len(await sched.submit(windows(MAX_QUEUE))) == MAX_QUEUE


async def test_another_request_cannot_submit_into_a_hold(sched: Scheduler) -> None:
    held, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        with sched.reserve(3):
            held.set()
            await done.wait()

    task = asyncio.create_task(holder())
    await asyncio.wait_for(held.wait(), 5)
    with pytest.raises(Overloaded):
        await sched.submit(windows(2))  # 3 held + 2 > 4
    done.set()
    await task
    assert len(await sched.submit(windows(2))) == 2


async def test_tasks_a_holder_starts_submit_into_its_holds(sched: Scheduler) -> None:
    # A comparison scores both models (here twice the same one) in tasks of its own.
    with sched.reserve(2), sched.reserve(2):
        both = await asyncio.gather(
            asyncio.create_task(sched.submit(windows(2))),
            asyncio.create_task(sched.submit(windows(2))),
        )
    assert [len(scored) for scored in both] == [2, 2]


async def test_a_request_larger_than_the_queue_is_taken_into_an_empty_one(
    sched: Scheduler,
) -> None:
    with sched.reserve(MAX_QUEUE + 2):
        assert len(await sched.submit(windows(MAX_QUEUE + 2))) == MAX_QUEUE + 2
