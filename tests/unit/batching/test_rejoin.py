"""The wait after a forward pass for the callers it answered (``batching.rejoin``): the rule
itself on a clock the tests set, then the batcher following it over a fake backend whose
passes the tests hold and release."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import pytest
from fakes import FakeBatchedBackend

from service.backends.base import ForwardItem
from service.batching.batcher import DynamicBatcher
from service.batching.rejoin import RejoinWait

on_session_loop = pytest.mark.asyncio(loop_scope="session")
RETURN_S = 0.1  # how long a caller takes to send its next request once answered
HELD_S = 1.0  # the first pass's length: recent passes then average ~0.24 s


# ---- the rule -----------------------------------------------------------------------
def test_no_pass_yet_means_no_wait() -> None:
    assert RejoinWait(0.5).remaining_s(pass_s=1.0, now=100.0) == 0.0


def test_waits_for_as_many_new_requests_as_the_pass_finished() -> None:
    rejoin = RejoinWait(0.5)
    rejoin.pass_ended(finished_requests=2, now=10.0)
    assert rejoin.remaining_s(pass_s=1.0, now=10.1) == pytest.approx(0.4)
    rejoin.request_arrived()
    assert rejoin.remaining_s(pass_s=1.0, now=10.2) == pytest.approx(0.3)
    rejoin.request_arrived()
    assert rejoin.remaining_s(pass_s=1.0, now=10.2) == 0.0


def test_the_wait_is_at_most_its_share_of_a_pass() -> None:
    rejoin = RejoinWait(0.25)
    rejoin.pass_ended(finished_requests=8, now=0.0)
    assert rejoin.remaining_s(pass_s=2.0, now=0.0) == pytest.approx(0.5)
    assert rejoin.remaining_s(pass_s=2.0, now=0.5) == 0.0
    assert rejoin.remaining_s(pass_s=2.0, now=7.0) == 0.0


def test_requests_that_came_during_the_pass_do_not_count() -> None:
    rejoin = RejoinWait(1.0)
    rejoin.request_arrived()  # queued while the pass ran: it is the pass after's anyway
    rejoin.pass_ended(finished_requests=1, now=0.0)
    assert rejoin.remaining_s(pass_s=1.0, now=0.0) == 1.0


def test_a_pass_that_finished_no_request_is_followed_by_no_wait() -> None:
    rejoin = RejoinWait(1.0)
    rejoin.pass_ended(finished_requests=0, now=0.0)  # one large request, mid-way
    assert rejoin.remaining_s(pass_s=1.0, now=0.0) == 0.0


def test_share_zero_never_waits() -> None:
    rejoin = RejoinWait(0.0)
    rejoin.pass_ended(finished_requests=5, now=0.0)
    assert rejoin.remaining_s(pass_s=1.0, now=0.0) == 0.0


@pytest.mark.parametrize("share", [-0.1, math.inf, math.nan])
def test_a_share_that_is_not_a_finite_non_negative_number_is_refused(share: float) -> None:
    with pytest.raises(ValueError):
        RejoinWait(share)


# ---- the batcher following it ---------------------------------------------------------
Make = Callable[..., tuple[DynamicBatcher, FakeBatchedBackend]]  # the conftest fixture


def window(tag: int) -> list[ForwardItem]:
    return [ForwardItem((tag,) * 4, 1)]


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def caller(batcher: DynamicBatcher, tag: int, rounds: int) -> None:
    """A caller with one request in flight: the next goes out ``RETURN_S`` after the last
    is answered."""
    for _ in range(rounds):
        await batcher.submit(window(tag))
        await asyncio.sleep(RETURN_S)


async def first_pass_alone(batcher: DynamicBatcher, backend: FakeBatchedBackend) -> list[int]:
    """Four closed-loop callers, the first one's request held alone in a pass (``HELD_S``,
    so that a share of a recent pass is well above ``RETURN_S``) while the other three
    queue behind it. Returns the tags of each pass."""
    backend.hold()
    first = asyncio.create_task(caller(batcher, 1, rounds=3))
    await until(lambda: len(backend.batches) == 1)
    others = [asyncio.create_task(caller(batcher, tag, rounds=2)) for tag in (2, 3, 4)]
    await until(lambda: batcher.queue_depth == 3)
    await asyncio.sleep(HELD_S)
    backend.release()
    await asyncio.gather(first, *others)
    return [sorted(it.input_ids[0] for it in batch) for batch in backend.batches]


@on_session_loop
async def test_callers_answered_by_a_pass_join_the_next_one(make: Make) -> None:
    batcher, backend = make(rejoin_wait=1.0)
    passes = await first_pass_alone(batcher, backend)
    # The pass after the first waits (up to ~0.24 s) for caller 1's next request, which
    # comes 0.1 s after its answer: four callers, one pass.
    assert passes[0] == [1]
    assert passes[1] == [1, 2, 3, 4]


@on_session_loop
async def test_without_the_wait_answered_callers_miss_the_next_pass(make: Make) -> None:
    batcher, backend = make(rejoin_wait=0.0)
    passes = await first_pass_alone(batcher, backend)
    assert passes[0] == [1]
    # The pass starts at once; caller 1 comes back 0.1 s later, to a pass of its own.
    assert passes[1] == [2, 3, 4]


@on_session_loop
async def test_a_lone_caller_is_not_kept_waiting(make: Make) -> None:
    batcher, backend = make(rejoin_wait=1.0)
    backend.hold()
    first = asyncio.create_task(batcher.submit(window(1)))
    await until(lambda: len(backend.batches) == 1)
    await asyncio.sleep(0.4)  # a long pass: a wait of a whole pass would be 0.1 s or more
    backend.release()
    await first
    for tag in (2, 3, 4):
        (scored,) = await batcher.submit(window(tag))
        # The pass before finished one request, and this is the one that came in.
        assert scored.timing.queue_s < 0.05


@on_session_loop
async def test_a_caller_that_does_not_come_back_costs_at_most_the_wait(make: Make) -> None:
    batcher, backend = make(rejoin_wait=0.5)
    backend.hold()
    gone = asyncio.create_task(batcher.submit(window(1)))  # answered, never sends again
    await until(lambda: len(backend.batches) == 1)
    queued = asyncio.create_task(batcher.submit(window(2)))
    await until(lambda: batcher.queue_depth == 1)
    enqueued = time.monotonic()  # a little after it was: the wait below is over-counted
    await asyncio.sleep(0.2)
    released = time.monotonic()
    backend.release()
    await gone
    (scored,) = await queued
    waited_after_the_pass = enqueued + scored.timing.queue_s - released
    # Recent passes took at most ~0.2 s here, so the wait is at most ~0.1 s; the bound
    # leaves room for a busy machine. Without a bound the item would wait for caller 1.
    assert waited_after_the_pass < 1.0
    assert len(backend.batches) == 2
