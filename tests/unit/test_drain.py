"""Engine.drain: admitted work finishes, new work and /readyz get 503, the grace is honoured.

The engine serves a fake backend (real tokenizer, fake scores) whose forward pass can be
held open, so "work still running" is a state the test controls, not a race.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fakes import FakeBatchedBackend

from service.api.rest import create_app
from service.backends import dynamic_batcher
from service.engine import Engine
from service.errors import Unavailable
from service.schemas import TextScoreRequest
from service.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


Setup = tuple[Engine, FakeBatchedBackend]


@pytest_asyncio.fixture(loop_scope="session")
async def held(tokenizer: Any) -> AsyncIterator[Callable[[], Setup]]:
    made: list[Setup] = []

    def factory() -> Setup:
        settings = Settings(max_wait_ms=0, request_timeout_s=30)
        engine = Engine(settings)
        backend = FakeBatchedBackend(tokenizer, max_context=64)
        engine.registry.add("default", "sha256:x", dynamic_batcher(backend, "default", settings))
        engine.registry.ready = True
        made.append((engine, backend))
        return engine, backend

    yield factory
    for engine, backend in made:
        backend.release()
        await engine.close()


def request(text: str) -> TextScoreRequest:
    return TextScoreRequest(texts=[text])


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


TEXTS = ["hello world", "the quick brown fox", "a lazy dog", "Grüße aus München"]


async def test_drain_lets_admitted_work_finish(held: Callable[[], Setup]) -> None:
    engine, backend = held()
    backend.hold()
    calls = [asyncio.create_task(engine.score_text(request(text))) for text in TEXTS]
    await until(lambda: engine.inflight == len(TEXTS) and backend.calls >= 1)
    drain = asyncio.create_task(engine.drain(30))
    await until(lambda: engine.draining)

    with pytest.raises(Unavailable):
        await engine.score_text(request("too late"))
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["type"] == "unavailable"
        late = await client.post("/v1/score/text", json={"texts": ["too late"]})
        assert late.status_code == 503
        assert (await client.get("/healthz")).status_code == 200
    assert not drain.done() and not any(c.done() for c in calls)

    backend.release()
    assert await asyncio.wait_for(drain, 10) is True
    assert engine.inflight == 0
    for text, call in zip(TEXTS, calls, strict=True):
        [result] = call.result().response.results
        ids = backend.tokenizer.encode(text, add_special_tokens=False)
        assert result.num_scored_tokens == len(ids) - 1
        assert result.sum_logprob == pytest.approx(-sum(ids[1:]) / 1000, rel=1e-5)


async def test_drain_returns_false_when_work_outlasts_grace(held: Callable[[], Setup]) -> None:
    engine, backend = held()
    backend.hold()
    call = asyncio.create_task(engine.score_text(request("hello world")))
    await until(lambda: backend.calls >= 1)
    assert await engine.drain(0.2) is False
    assert engine.inflight == 1 and not call.done()
    backend.release()  # the admitted request still completes after the grace
    outcome = await asyncio.wait_for(call, 10)
    assert outcome.response.results[0].num_scored_tokens > 0
    assert engine.inflight == 0


async def test_drain_when_idle_returns_at_once(held: Callable[[], Setup]) -> None:
    engine, _ = held()
    await engine.score_text(request("hello world"))
    assert await asyncio.wait_for(engine.drain(30), 1) is True
    with pytest.raises(Unavailable):
        await engine.score_text(request("hello world"))


async def test_work_waiting_to_tokenize_when_the_grace_ends_gets_503(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the model cancels what waits for its tokenizer thread: those requests are
    unavailable (503, retryable elsewhere), not callers that left (an empty 499)."""
    import service.engine as engine_module

    engine = engine_factory()
    real_encode = engine_module.encode

    def slow_encode(*args: Any) -> Any:
        time.sleep(0.3)
        return real_encode(*args)

    monkeypatch.setattr(engine_module, "encode", slow_encode)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        requests = [
            asyncio.create_task(client.post("/v1/score/text", json={"texts": [f"text {i}"]}))
            for i in range(3)
        ]
        await asyncio.sleep(0.1)  # the first is tokenizing, the others wait for the thread
        await engine.close(wait_s=0.0)  # as the server does when the grace period ends
        answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers][1:] == [503, 503]
    assert all(a.json()["error"]["type"] == "unavailable" for a in answers[1:])
