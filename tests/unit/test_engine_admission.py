"""Engine: a model whose queue is full refuses a request at once (429), before its texts
are tokenized, whichever scheduler the model has."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fakes import FakeSelfBatchingBackend

from service.backends import pass_through
from service.engine import Engine
from service.errors import Overloaded
from service.schemas import CompareRequest, TextScoreRequest
from service.served import ServedModel
from service.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def serving(backend: FakeSelfBatchingBackend, max_queue: int) -> tuple[Engine, ServedModel]:
    """An engine serving ``backend`` as model "default" through the pass-through scheduler."""
    settings = Settings(request_timeout_s=30, max_queue=max_queue)
    engine = Engine(settings)
    model = engine.registry.add("default", "sha256:x", pass_through(backend, "default", settings))
    engine.registry.ready = True
    return engine, model


async def test_a_full_queue_refuses_before_tokenizing(tokenizer: Any) -> None:
    # The refusal came from the scheduler only after tokenizing: under overload requests
    # queued for the tokenizer thread and ended as 504s instead of fast 429s.
    backend = FakeSelfBatchingBackend(tokenizer)
    engine, model = serving(backend, max_queue=1)
    tokenizer_free = threading.Event()
    try:
        backend.hold()
        first = asyncio.create_task(engine.score_text(TextScoreRequest(texts=["one"])))
        await asyncio.wait_for(backend.called.wait(), 5)  # its window fills the queue
        model.prep.submit(tokenizer_free.wait, 30)  # the tokenizer thread is busy
        with pytest.raises(Overloaded) as refused:
            await asyncio.wait_for(engine.score_text(TextScoreRequest(texts=["two"])), 5)
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
        assert engine.inflight == 1
        tokenizer_free.set()
        backend.release()
        answered = (await asyncio.wait_for(first, 5)).response.results[0]
        assert answered.num_tokens == len(tokenizer.encode("one", add_special_tokens=False))
    finally:
        tokenizer_free.set()
        backend.release()
        await engine.close()


async def test_a_comparison_checks_both_models_queues_before_tokenizing(tokenizer: Any) -> None:
    settings = Settings(request_timeout_s=30, max_queue=1)
    engine = Engine(settings)
    free, full = FakeSelfBatchingBackend(tokenizer), FakeSelfBatchingBackend(tokenizer)
    engine.registry.add("default", "sha256:x", pass_through(free, "default", settings))
    second = engine.registry.add("b", "sha256:y", pass_through(full, "b", settings))
    engine.registry.ready = True
    tokenizer_free = threading.Event()
    try:
        full.hold()
        busy = asyncio.create_task(
            engine.score_text(TextScoreRequest(model="b", texts=["a few words"]))
        )
        await asyncio.wait_for(full.called.wait(), 5)  # model b's queue is full
        second.prep.submit(tokenizer_free.wait, 30)
        request = CompareRequest(models=["default", "b"], texts=["hello"])
        with pytest.raises(Overloaded):
            await asyncio.wait_for(engine.compare_models(request), 5)
        tokenizer_free.set()
        full.release()
        await asyncio.wait_for(busy, 5)
    finally:
        tokenizer_free.set()
        full.release()
        await engine.close()


async def test_a_burst_beyond_the_queue_is_refused_before_it_is_tokenized(tokenizer: Any) -> None:
    # Only queued windows counted at admission, so while the tokenizer thread was busy a
    # whole burst was admitted, tokenized one by one, then refused at submit (an audit saw
    # 28 of 30 eight-text requests tokenized for nothing with --max-queue 8).
    engine, model = serving(FakeSelfBatchingBackend(tokenizer), max_queue=8)
    tokenizer_free = threading.Event()
    try:
        model.prep.submit(tokenizer_free.wait, 30)  # the tokenizer thread is busy
        burst = [
            asyncio.create_task(
                engine.score_text(TextScoreRequest(texts=[f"text {k}.{i}" for i in range(8)]))
            )
            for k in range(5)
        ]
        refused: set[asyncio.Task[Any]] = set()
        waiting = set(burst)
        while len(refused) < 4:  # all while the tokenizer is still busy
            done, waiting = await asyncio.wait(
                waiting, timeout=5, return_when=asyncio.FIRST_COMPLETED
            )
            assert done, "the burst's excess was not refused before tokenizing"
            refused |= done
        assert all(isinstance(task.exception(), Overloaded) for task in refused)
        (admitted,) = waiting
        tokenizer_free.set()
        assert len((await asyncio.wait_for(admitted, 5)).response.results) == 8
        answered = await engine.score_text(TextScoreRequest(texts=["room again"] * 8))
        assert len(answered.response.results) == 8
    finally:
        tokenizer_free.set()
        await engine.close()
