"""Every door records its requests through the core: the same refusal counts the same
rejection reason over REST and gRPC, a fault of ours is a 500 (never a client that left),
and gRPC answers carry the timing REST sends in headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import httpx
import pytest

from service.api.auth import KeyChecker
from service.api.grpc_server import ScorerServicer
from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from service.api.rest import create_app
from service.engine import Engine
from service.metrics import REGISTRY

if TYPE_CHECKING:
    from conftest import Served

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = 30.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected(reason: str) -> float:
    return sample("lmscore_requests_rejected_total", reason=reason)


async def test_same_refusal_counts_the_same_reason_on_both_doors(
    grpc_served: Served, client: httpx.AsyncClient
) -> None:
    refusals: list[tuple[dict[str, Any], str, grpc.StatusCode]] = [
        ({"texts": ["hi"], "return_tokens": True, "top_k": 21}, "invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ({"texts": ["hi"], "model": "no-such-model"}, "invalid", grpc.StatusCode.NOT_FOUND),
        ({"texts": []}, "invalid", grpc.StatusCode.INVALID_ARGUMENT),
    ]  # fmt: skip
    for body, reason, code in refusals:
        before = rejected(reason)
        answer = await client.post("/v1/score/text", json=body)
        assert answer.status_code in (404, 413, 422), answer.text
        assert rejected(reason) == before + 1, body
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_served.stub.ScoreText(pb.ScoreTextRequest(**body), timeout=T)
        assert info.value.code() == code
        assert rejected(reason) == before + 2, body


async def test_a_fault_of_ours_is_a_500_not_a_client_that_left(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_factory()

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "score_text", broken)
    labels = {"endpoint": "score_text", "protocol": "http"}
    errors = sample("lmscore_requests_total", code="500", **labels)
    left = sample("lmscore_requests_total", code="499", **labels)
    cancelled = rejected("cancelled")
    transport = httpx.ASGITransport(app=create_app(engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post("/v1/score/text", json={"texts": ["hi"]})
    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "internal"
    assert sample("lmscore_requests_total", code="500", **labels) == errors + 1
    assert sample("lmscore_requests_total", code="499", **labels) == left
    assert rejected("cancelled") == cancelled


@pytest.mark.parametrize("method", ["ScoreText", "ScoreChat", "ScoreContinuations"])
async def test_grpc_answers_carry_timing_metadata(grpc_served: Served, method: str) -> None:
    requests = {
        "ScoreText": pb.ScoreTextRequest(texts=["hello world", "a lazy dog"]),
        "ScoreChat": pb.ScoreChatRequest(
            conversations=[
                pb.Conversation(
                    messages=[
                        pb.ChatMessage(role="user", content="hi"),
                        pb.ChatMessage(role="assistant", content="hello there"),
                    ]
                )
            ]
        ),
        "ScoreContinuations": pb.ScoreContinuationsRequest(
            context="the quick brown", continuations=[" fox", " dog"]
        ),
    }
    call = getattr(grpc_served.stub, method)(requests[method], timeout=T)
    await call
    metadata = dict(await call.initial_metadata())
    assert float(metadata["x-queue-time-ms"]) >= 0
    assert float(metadata["x-inference-time-ms"]) > 0


@pytest.mark.parametrize("ending", ["deadline", "client cancel"])
async def test_a_stream_that_ends_early_is_counted_by_why(grpc_served: Served, ending: str) -> None:
    """gRPC cancels a stream's handler both when its deadline passes and when the client
    cancels: the first is a timeout (as for unary calls), the second a client that left."""
    code, reason = (
        ("DEADLINE_EXCEEDED", "timeout") if ending == "deadline" else ("CANCELLED", "cancelled")
    )
    labels = {"endpoint": "score_text_stream", "protocol": "grpc", "code": code}
    before = (sample("lmscore_requests_total", **labels), rejected(reason))

    async def requests_then_silence() -> Any:
        yield pb.ScoreTextRequest(texts=["hello"])
        await asyncio.sleep(30)  # the stream stays open

    # A channel of its own, closed when done, as a client process that gives up would.
    async with grpc.aio.insecure_channel(grpc_served.address) as channel:
        call = pb_grpc.ScorerStub(channel).ScoreTextStream(
            requests_then_silence(), timeout=3.0 if ending == "deadline" else T
        )  # the deadline covers the first answer too, on a loaded machine
        await call.read()
        if ending == "client cancel":
            call.cancel()
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(1500):
        if sample("lmscore_requests_total", **labels) > before[0]:
            break
        await asyncio.sleep(0.01)
    assert sample("lmscore_requests_total", **labels) == before[0] + 1
    assert rejected(reason) == before[1] + 1


class EndingCall:
    """The context of a stream whose call ends (``end``) after its first answer: gRPC may
    then end the handler's reads quietly rather than cancel it."""

    def __init__(self) -> None:
        self.remaining = 30.0

    def end(self, remaining: float) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining

    def cancelled(self) -> bool:
        return False

    def invocation_metadata(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize(("remaining", "code"), [(0.0, "DEADLINE_EXCEEDED"), (25.0, "OK")])
async def test_a_stream_whose_reads_end_at_its_deadline_is_a_timeout(
    tiny_engine: Engine, remaining: float, code: str
) -> None:
    """Reads that end once the deadline has passed are the call ending, not the client
    closing its side after its last request (which is an answered stream: OK)."""
    servicer = ScorerServicer(tiny_engine, KeyChecker([]))
    labels = {"endpoint": "score_text_stream", "protocol": "grpc", "code": code}
    before = sample("lmscore_requests_total", **labels)
    call = EndingCall()
    answered = asyncio.Event()

    async def one_request_then_end() -> Any:
        yield pb.ScoreTextRequest(texts=["hello"])
        await answered.wait()
        call.end(remaining)

    answers = []
    stream = servicer.ScoreTextStream(one_request_then_end(), cast(grpc.aio.ServicerContext, call))
    async for answer in stream:
        answers.append(answer)
        answered.set()
    assert len(answers) == 1
    assert sample("lmscore_requests_total", **labels) == before + 1


class UncancelledCall(EndingCall):
    """The context of a stream whose deadline passes while gRPC never cancels its handler
    (as the in-process server was seen to do): the handler must stop by itself."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__()
        self.deadline = time.monotonic() + deadline_s
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.trailers: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        self.trailers = trailers

    def time_remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


async def test_a_stream_waiting_on_a_silent_client_ends_at_its_deadline(
    tiny_engine: Engine,
) -> None:
    servicer = ScorerServicer(tiny_engine, KeyChecker([]))
    labels = {"endpoint": "score_text_stream", "protocol": "grpc", "code": "DEADLINE_EXCEEDED"}
    before = (sample("lmscore_requests_total", **labels), rejected("timeout"))
    call = UncancelledCall(deadline_s=2.0)

    async def one_request_then_silence() -> Any:
        yield pb.ScoreTextRequest(texts=["hello"])
        await asyncio.sleep(60)  # the client neither writes nor closes its side

    answers = []

    async def read_all() -> None:
        context = cast(grpc.aio.ServicerContext, call)
        async for answer in servicer.ScoreTextStream(one_request_then_silence(), context):
            answers.append(answer)

    started = time.monotonic()
    with pytest.raises(grpc.aio.AbortError):
        await asyncio.wait_for(read_all(), timeout=15)
    assert time.monotonic() - started < 10  # at the deadline, not when the client goes
    assert len(answers) == 1
    assert call.aborted is not None and call.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ("lmscore-error-type", "timeout") in call.trailers
    assert sample("lmscore_requests_total", **labels) == before[0] + 1
    assert rejected("timeout") == before[1] + 1
