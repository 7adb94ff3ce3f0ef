"""Engine: a caller's cancel (a client that left) is never lost, wherever it lands.

The engine serves a fake self-batching backend (real tokenizer, fake scores) behind the
pass-through, so the moment the cancel lands is one the test chooses, not a race.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import FakeSelfBatchingBackend

from service.backends import pass_through
from service.backends.base import ForwardItem, ForwardResult
from service.engine import Engine
from service.schemas import CompareRequest, TextScoreRequest
from service.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def engine_over(backend: FakeSelfBatchingBackend) -> Engine:
    settings = Settings(request_timeout_s=30)
    engine = Engine(settings)
    engine.registry.add("default", "sha256:x", pass_through(backend, "default", settings))
    engine.registry.ready = True
    return engine


async def test_a_request_cancelled_as_its_scores_arrive_ends_cancelled(tokenizer: Any) -> None:
    # Under a deadline, Python 3.11's asyncio.wait_for returns the work's result when the
    # cancel lands after the work finished: the request then counted as answered.
    backend = FakeSelfBatchingBackend(tokenizer)
    engine = engine_over(backend)
    try:
        caller = asyncio.create_task(engine.score_text(TextScoreRequest(texts=["hello world"])))
        backend.on_finish = caller.cancel
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert engine.inflight == 0
    finally:
        await engine.close()


async def test_a_request_cancelled_while_scoring_aborts_its_windows(tokenizer: Any) -> None:
    backend = FakeSelfBatchingBackend(tokenizer)
    engine = engine_over(backend)
    try:
        backend.hold()
        caller = asyncio.create_task(engine.score_text(TextScoreRequest(texts=["a", "b c d"])))
        await asyncio.wait_for(backend.called.wait(), 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert backend.aborted == 1
        assert engine.inflight == 0
    finally:
        backend.release()
        await engine.close()


class FailsOnceOtherRuns(FakeSelfBatchingBackend):
    """Fails its call as soon as ``other`` is scoring: one model of a comparison fails
    while the other's windows are in its backend."""

    def __init__(self, tokenizer: Any, other: FakeSelfBatchingBackend) -> None:
        super().__init__(tokenizer)
        self.other = other

    async def score(self, items: list[ForwardItem]) -> list[ForwardResult]:
        await self.other.called.wait()
        raise RuntimeError("this backend failed")


async def test_a_comparison_whose_second_model_fails_aborts_the_first(tokenizer: Any) -> None:
    # asyncio.gather left the first model's windows running after the request had failed
    # and left the in-flight count: work nobody waited for, unseen by the drain.
    held = FakeSelfBatchingBackend(tokenizer)
    engine = engine_over(held)
    failing = FailsOnceOtherRuns(tokenizer, held)
    engine.registry.add("b", "sha256:y", pass_through(failing, "b", engine.settings))
    try:
        held.hold()
        request = CompareRequest(models=["default", "b"], texts=["hello world"])
        with pytest.raises(RuntimeError, match="this backend failed"):  # a door's 500
            await asyncio.wait_for(engine.compare_models(request), 10)
        assert held.aborted == 1  # cancelled before the error reached the caller
        assert engine.inflight == 0
    finally:
        held.release()
        await engine.close()
