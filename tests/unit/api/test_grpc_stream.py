"""A gRPC stream paced by its own backlog: a full queue makes it wait for its own requests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from test_grpc import T, as_dict, assert_close

from service.api.grpc_stream import StreamBacklog
from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.errors import Overloaded

if TYPE_CHECKING:  # fixtures and their types live in tests/unit/api/conftest.py
    from conftest import Served

pytestmark = pytest.mark.asyncio(loop_scope="session")

Factory = Callable[..., Awaitable["Served"]]


class Queue:
    """A queue of ``capacity`` slots: an attempt holds one for ``hold_s`` or is refused."""

    def __init__(self, capacity: int, hold_s: float = 0.01) -> None:
        self.capacity = capacity
        self.hold_s = hold_s
        self.held = 0
        self.most_held = 0
        self.refusals = 0

    async def attempt(self, result: int) -> int:
        if self.held >= self.capacity:
            self.refusals += 1
            raise Overloaded("the queue is full", retry_after_s=1.0)
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self.held -= 1
        return result


async def run_stream(queue: Queue, requests: int) -> list[int | BaseException]:
    backlog = StreamBacklog()
    tasks = [
        asyncio.ensure_future(backlog.paced(functools.partial(queue.attempt, i)))
        for i in range(requests)
    ]
    async with asyncio.timeout(10):
        return await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_stream_larger_than_the_queue_waits_for_its_own_requests() -> None:
    queue = Queue(capacity=3)
    assert await run_stream(queue, requests=20) == list(range(20))
    assert queue.refusals > 0 and queue.most_held == 3


async def test_a_refusal_with_nothing_of_the_stream_under_way_fails() -> None:
    # Other clients fill the queue: as a unary call, the stream is told (no hang).
    results = await run_stream(Queue(capacity=0), requests=5)
    assert all(isinstance(result, Overloaded) for result in results)


async def test_refusals_that_come_together_do_not_wait_on_each_other() -> None:
    # Every attempt refused at once except one: the others wait for it, then go on.
    queue = Queue(capacity=1, hold_s=0.05)
    assert await run_stream(queue, requests=8) == list(range(8))


async def test_one_finished_request_lets_one_waiting_request_try_again() -> None:
    # Waking every waiting request at each finish retried (and tokenized again) each of
    # them for every request answered: 8 + 7 + 6 + ... attempts here, not 8 + 7.
    queue = Queue(capacity=1, hold_s=0.02)
    assert await run_stream(queue, requests=8) == list(range(8))
    assert queue.refusals == 7


async def test_a_cancelled_stream_leaves_nothing_waiting() -> None:
    queue = Queue(capacity=1, hold_s=0.05)
    backlog = StreamBacklog()
    tasks = [asyncio.ensure_future(backlog.paced(functools.partial(queue.attempt, i))) for i in range(4)]  # fmt: skip
    await asyncio.sleep(0.01)  # one holds the queue, three wait
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results), results
    assert queue.held == 0


async def test_other_errors_are_not_retried() -> None:
    backlog = StreamBacklog()
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise ValueError("bad")

    with pytest.raises(ValueError):
        await asyncio.ensure_future(backlog.paced(failing))
    assert calls == 1


def stream_of_many_texts() -> list[pb.ScoreTextRequest]:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "again",
        "and",
        "again",
    ]
    return [pb.ScoreTextRequest(texts=[" ".join(words[: 2 + i + j]) for j in range(3)]) for i in range(6)]  # fmt: skip


async def test_a_stream_over_the_queue_limit_is_answered_in_full(
    grpc_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6 requests of 3 texts into a queue of 4 items: the stream used to end with
    # RESOURCE_EXHAUSTED at its second or third request.
    served = await grpc_factory(max_queue=4, max_batch_size=2)
    model = served.engine.registry.models["default"]
    real_forward = model.backend.forward

    def slow_forward(items: Any, lane: int | None = None) -> Any:
        time.sleep(0.05)  # on the batcher's worker thread: the queue fills meanwhile
        return real_forward(items, lane)

    monkeypatch.setattr(model.backend, "forward", slow_forward)
    requests = stream_of_many_texts()
    call = served.stub.ScoreTextStream(iter(requests), timeout=T)
    streamed = [response async for response in call]
    assert await call.code() == grpc.StatusCode.OK
    monkeypatch.setattr(model.backend, "forward", real_forward)
    assert len(streamed) == len(requests)
    for request, response in zip(requests, streamed, strict=True):
        unary = await served.stub.ScoreText(request, timeout=T)
        assert_close(as_dict(response), as_dict(unary))


async def test_a_stream_refused_by_other_load_still_ends(
    grpc_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing of its own in flight to wait for: RESOURCE_EXHAUSTED, as a unary call gets.
    served = await grpc_factory(max_queue=1)
    model = served.engine.registry.models["default"]

    def always_full(windows: int) -> contextlib.AbstractContextManager[None]:
        raise Overloaded("the queue of model 'default' is full", retry_after_s=2.0)

    monkeypatch.setattr(model.scheduler, "reserve", always_full)
    call = served.stub.ScoreTextStream(iter(stream_of_many_texts()[:2]), timeout=T)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [response async for response in call]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "2") in tuple(info.value.trailing_metadata() or ())
