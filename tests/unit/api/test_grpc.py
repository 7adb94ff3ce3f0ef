"""The gRPC door in-process: parity with REST, errors, auth, health, reflection, streams, metrics."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from tiny_engines import asgi_client
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL

from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.metrics import REGISTRY

if TYPE_CHECKING:  # fixtures and their types live in tests/unit/api/conftest.py
    from conftest import Served

pytestmark = pytest.mark.asyncio(loop_scope="session")

T = 30.0  # deadline of every call that is not about deadlines: a hang fails, not stalls
Code = grpc.StatusCode
Factory = Callable[..., Awaitable["Served"]]
TEXTS = ["hello world", "the quick brown fox jumps over a lazy dog", "Grüße aus München 😀"]
CHAT = [
    ("system", "You are terse."),
    ("user", "hello"),
    ("assistant", "hello world"),
    ("user", "Привет мир как дела"),
    ("assistant", "спасибо хорошо 😀"),
]
LONG = " ".join(["the quick brown fox jumps over a lazy dog"] * 20)


def normal(value: Any) -> Any:
    """Nulls and empty lists dropped: REST omits or nulls what protobuf leaves unset or empty."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def as_dict(message: Message) -> Any:
    flags = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    return normal(MessageToDict(message, **flags))


def assert_close(got: Any, want: Any, path: str = "") -> None:
    """Same structure and values; floats to the contract's batch tolerance (relative, and
    absolute near zero): every use compares two requests, i.e. two forward passes."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS), path
    else:
        assert got == want and type(got) is type(want), (path, got, want)


def conversation(turns: list[tuple[str, str]]) -> pb.Conversation:
    return pb.Conversation(messages=[pb.ChatMessage(role=r, content=c) for r, c in turns])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Polls ``check``: server-side bookkeeping may finish just after the client sees a status."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def assert_code(call: Awaitable[Any], code: grpc.StatusCode, detail: str | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    if detail is not None:
        assert detail in (info.value.details() or "")


async def assert_answers(served: Served) -> None:
    response = await served.stub.ScoreText(pb.ScoreTextRequest(texts=TEXTS[:2]), timeout=T)
    assert [r.num_scored_tokens > 0 for r in response.results] == [True, True]


async def test_a_large_answer_is_converted_off_the_loop(
    grpc_served: Served, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting a reply is Python (seconds for a long text's per-token entries): a large
    one is converted on a worker thread, in pieces, to the same message; small ones on the
    loop. (Unary and streamed replies alike.)"""
    from service.api import grpc_convert

    on_loop: list[bool] = []
    original = grpc_convert.to_message

    def spied(model: Any, message_type: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return original(model, message_type)

    monkeypatch.setattr(grpc_convert, "to_message", spied)
    large = {"texts": [LONG[:200]] * 3, "return_tokens": True, "top_k": 20}
    rest = await client.post("/v1/score/text", json=large)
    got = await grpc_served.stub.ScoreText(pb.ScoreTextRequest(**large), timeout=T)
    assert_close(as_dict(got), normal(rest.json()))
    assert all(len(t.top) == 20 for r in got.results for t in r.tokens[1:])
    stream = grpc_served.stub.ScoreTextStream(iter([pb.ScoreTextRequest(**large)]), timeout=T)
    assert [len(r.results) async for r in stream] == [3]
    await grpc_served.stub.ScoreText(pb.ScoreTextRequest(texts=TEXTS), timeout=T)
    assert on_loop == [False, False, True]


async def test_score_text_parity_with_rest(grpc_served: Served, client: httpx.AsyncClient) -> None:
    distribution = {
        "return_tokens": True,
        "return_entropy": True,
        "min_k": True,
        "min_k_percent": 40.0,
    }
    for extra in ({}, {"return_tokens": True, "top_k": 3}, {"prepend_bos": True}, distribution):
        rest = await client.post("/v1/score/text", json={"texts": TEXTS, **extra})
        assert rest.status_code == 200, rest.text
        got = await grpc_served.stub.ScoreText(pb.ScoreTextRequest(texts=TEXTS, **extra), timeout=T)
        assert_close(as_dict(got), normal(rest.json()))
        assert got.model == "default" and got.model_revision == "sha256:test"
        assert all(r.HasField("ppl") and r.HasField("bits_per_char") for r in got.results)


async def test_score_chat_parity_with_rest(grpc_served: Served, client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"conversations": [[{"role": r, "content": c} for r, c in CHAT]]}
    body |= {"return_tokens": True, "top_k": 2, "score_roles": ["user", "assistant"]}
    body |= {"return_entropy": True, "min_k": True}
    rest = await client.post("/v1/score/chat", json=body)
    assert rest.status_code == 200, rest.text
    roles = ["user", "assistant"]
    request = pb.ScoreChatRequest(conversations=[conversation(CHAT)], score_roles=roles)
    request.return_tokens, request.top_k = True, 2
    request.return_entropy, request.min_k = True, True
    got = await grpc_served.stub.ScoreChat(request, timeout=T)
    assert_close(as_dict(got), normal(rest.json()))
    (result,) = got.results
    assert result.HasField("mean_entropy") and result.HasField("min_k_plus_plus")
    assert [(m.index, m.role, m.scored) for m in result.messages] == [
        (i, role, role != "system") for i, (role, _) in enumerate(CHAT)
    ]
    assert all(t.HasField("scored") for t in result.tokens)
    with_index = [t for t in result.tokens if t.HasField("message_index")]
    assert 0 < len(with_index) < len(result.tokens)  # template text has no message
    assert {t.message_index for t in with_index} == set(range(len(CHAT)))
    assert sum(t.logprob for t in result.tokens if t.scored) == pytest.approx(result.sum_logprob)


# A template that reads a message key besides role and content.
NAMED_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}{% if m.name %} {{ m.name }}"
    "{% endif %}{% if m.turn %} #{{ m.turn }}{% endif %}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}"
)


async def test_a_messages_other_keys_reach_the_template_as_over_rest(
    grpc_factory: Factory,
) -> None:
    served = await grpc_factory()
    served.engine.registry.get("default").backend.tokenizer.chat_template = NAMED_TEMPLATE
    extra = {"name": "Ada Lovelace", "turn": 2}
    messages = [{"role": r, "content": c} for r, c in CHAT]
    named = [messages[0] | extra, *messages[1:]]
    body = {"conversations": [named], "return_tokens": True}
    async with asgi_client(served.engine) as client:
        rest = await client.post("/v1/score/chat", json=body)
        plain = await client.post("/v1/score/chat", json={"conversations": [messages]})
    assert rest.status_code == 200, rest.text
    assert "Ada Lovelace #2" in "".join(t["text"] for t in rest.json()["results"][0]["tokens"])
    assert plain.json()["results"][0]["num_tokens"] < rest.json()["results"][0]["num_tokens"]

    request = pb.ScoreChatRequest(conversations=[conversation(CHAT)], return_tokens=True)
    request.conversations[0].messages[0].extra.update(extra)  # 2 travels as the double 2.0
    got = await served.stub.ScoreChat(request, timeout=T)
    assert_close(as_dict(got), normal(rest.json()))

    request.conversations[0].messages[0].extra.update({"score": math.nan})  # not JSON
    with pytest.raises(grpc.aio.AioRpcError) as not_json:
        await served.stub.ScoreChat(request, timeout=T)
    assert not_json.value.code() == Code.INVALID_ARGUMENT
    trailers = dict(not_json.value.trailing_metadata() or ())
    assert trailers["lmscore-param"] == "conversations[0][0].extra"
    del request.conversations[0].messages[0].extra["score"]
    request.conversations[0].messages[1].extra.update({"content": "forged"})
    with pytest.raises(grpc.aio.AioRpcError) as clash:
        await served.stub.ScoreChat(request, timeout=T)
    assert clash.value.code() == Code.INVALID_ARGUMENT
    trailers = dict(clash.value.trailing_metadata() or ())
    assert trailers["lmscore-param"] == "conversations[0][1].extra"


async def test_text_tokens(grpc_served: Served, tokenizer: Any) -> None:
    text = TEXTS[2]
    request = pb.ScoreTextRequest(texts=[text], return_tokens=True, top_k=3)
    (result,) = (await grpc_served.stub.ScoreText(request, timeout=T)).results
    tokens = result.tokens
    assert [t.id for t in tokens] == tokenizer(text, add_special_tokens=False).input_ids
    assert tokens[0].start == 0 and tokens[-1].end == len(text)
    assert all(a.end == b.start for a, b in itertools.pairwise(tokens))
    assert all(text[t.start : t.end] == t.text for t in tokens)
    first, rest = tokens[0], tokens[1:]
    assert not first.HasField("logprob") and not first.HasField("rank") and not first.top
    for token in rest:
        assert token.HasField("logprob") and token.rank >= 1 and len(token.top) == 3
        alternatives = [a.logprob for a in token.top]
        assert alternatives == sorted(alternatives, reverse=True)
        assert (token.rank == 1) == (token.top[0].id == token.id)
    for token in tokens:  # chat-only fields stay unset on plain texts
        assert not token.HasField("message_index") and not token.HasField("scored")
    assert sum(t.logprob for t in rest) == pytest.approx(result.sum_logprob)
    assert result.num_tokens == len(tokens) and result.num_scored_tokens == len(rest)


async def test_one_token_text_leaves_optionals_unset(
    grpc_served: Served, client: httpx.AsyncClient, tokenizer: Any
) -> None:
    word = next(w for w in ("the", "a", "hello", "dog") if len(tokenizer(w).input_ids) == 1)
    got = await grpc_served.stub.ScoreText(pb.ScoreTextRequest(texts=[word]), timeout=T)
    (result,) = got.results
    assert result.num_tokens == 1 and result.num_scored_tokens == 0 and result.sum_logprob == 0
    for field in ("mean_nll", "ppl", "bits_per_byte", "bits_per_char"):
        assert not result.HasField(field), field
    assert not got.aggregate.HasField("ppl") and not got.aggregate.HasField("mean_nll")
    rest = await client.post("/v1/score/text", json={"texts": [word]})
    assert rest.json()["results"][0]["ppl"] is None
    assert_close(as_dict(got), normal(rest.json()))


async def test_list_models_mirrors_rest(grpc_served: Served, client: httpx.AsyncClient) -> None:
    got = await grpc_served.stub.ListModels(pb.ListModelsRequest(), timeout=T)
    rest = (await client.get("/v1/models")).json()
    assert_close(as_dict(got), normal(rest))
    assert got.object == "list" and [m.id for m in got.data] == ["default"]
    assert got.data[0].has_chat_template and got.data[0].max_context == 64


async def test_get_model_mirrors_rest(grpc_served: Served, client: httpx.AsyncClient) -> None:
    got = await grpc_served.stub.GetModel(pb.GetModelRequest(id="default"), timeout=T)
    rest = (await client.get("/v1/models/default")).json()
    assert_close(as_dict(got), normal(rest))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await grpc_served.stub.GetModel(pb.GetModelRequest(id="nope"), timeout=T)
    assert missing.value.code() == Code.NOT_FOUND
    assert (await client.get("/v1/models/nope")).status_code == 404


Text, Invalid = pb.ScoreTextRequest, Code.INVALID_ARGUMENT
ERRORS: dict[str, tuple[Message, grpc.StatusCode, str | None]] = {
    "empty": (Text(), Invalid, "texts"),
    "empty_text": (Text(texts=["ok", ""]), Invalid, "texts[1]"),
    "unknown_model": (Text(model="nope", texts=["hi"]), Code.NOT_FOUND, "nope"),
    "top_k_21": (Text(texts=["hi"], return_tokens=True, top_k=21), Invalid, "top_k"),
    "unknown_overflow": (Text(texts=["hi"], overflow=7), Invalid, "overflow"),  # type: ignore[arg-type]
    "too_long": (Text(texts=[LONG]), Invalid, "texts[0]"),
    "min_k_percent_0": (Text(texts=["hi"], min_k=True, min_k_percent=0), Invalid, "min_k_percent"),
    "min_k_percent_101": (Text(texts=["hi"], min_k_percent=101), Invalid, "min_k_percent"),
    "unknown_role": (
        pb.ScoreChatRequest(conversations=[conversation([("wizard", "hi"), ("assistant", "x")])]),
        Invalid,
        "wizard",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_errors(grpc_served: Served, case: str) -> None:
    request, code, detail = ERRORS[case]
    method = grpc_served.stub.ScoreChat if isinstance(request, pb.ScoreChatRequest) else None
    call = (method or grpc_served.stub.ScoreText)(request, timeout=T)
    await assert_code(call, code, detail)
    await assert_answers(grpc_served)


TRAILERS = [  # (request, REST's type, REST's param)
    (Text(texts=["ok", ""]), "invalid_request", "texts[1]"),
    (Text(model="nope", texts=["hi"]), "not_found", "model"),
    (Text(texts=[LONG]), "invalid_request", "texts[0]"),
    (Text(texts=["hi"], return_tokens=True, top_k=21), "invalid_request", "top_k"),
]


async def test_errors_carry_the_contract_type_and_field_as_trailers(grpc_served: Served) -> None:
    """REST's type and param, machine-readable: the status message alone names the
    field only as a prefix, and not at all when the message already mentions it."""
    for request, type_, param in TRAILERS:
        call = grpc_served.stub.ScoreText(request, timeout=T)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        trailers = dict(failed.value.trailing_metadata() or ())
        assert trailers.get("lmscore-error-type") == type_, request
        assert trailers.get("lmscore-param") == param, request


# A field tag whose varint never ends; texts (field 2) holding bytes that are not UTF-8.
UNDECODABLE = [b"\xff\xff\xff", b"\x12\x02\xc3\x28"]


async def test_undecodable_message_is_invalid_argument(grpc_served: Served) -> None:
    """Bytes that do not parse as the request type are INVALID_ARGUMENT and counted like
    any refusal, on unary calls and streams (the transport answered UNKNOWN; found by
    test_grpc_fuzz)."""
    labels = {"endpoint": "score_text", "protocol": "grpc", "code": "INVALID_ARGUMENT"}
    before = sample("lmscore_requests_total", **labels)
    unary = grpc_served.channel.unary_unary("/lmscore.v1.Scorer/ScoreText")
    for garbage in UNDECODABLE:
        await assert_code(unary(garbage, timeout=T), Code.INVALID_ARGUMENT, "malformed")
    await eventually(lambda: sample("lmscore_requests_total", **labels) == before + 2)
    streams = {**labels, "endpoint": "score_text_stream"}
    streams_before = sample("lmscore_requests_total", **streams)
    call = grpc_served.channel.stream_stream("/lmscore.v1.Scorer/ScoreTextStream")(timeout=T)
    await call.write(pb.ScoreTextRequest(texts=TEXTS[:1]).SerializeToString())
    assert pb.ScoreTextResponse.FromString(await call.read()).results[0].num_tokens > 0
    await call.write(UNDECODABLE[0])
    await assert_code(call.read(), Code.INVALID_ARGUMENT, "malformed")
    await eventually(lambda: sample("lmscore_requests_total", **streams) == streams_before + 1)
    await assert_answers(grpc_served)


async def test_tiny_deadline(grpc_served: Served) -> None:
    call = grpc_served.stub.ScoreText(pb.ScoreTextRequest(texts=[LONG[:200]] * 8), timeout=0.001)
    await assert_code(call, Code.DEADLINE_EXCEEDED, None)
    await assert_answers(grpc_served)


async def test_too_many_texts_is_invalid_argument(grpc_factory: Factory) -> None:
    served = await grpc_factory(max_texts_per_request=2)
    call = served.stub.ScoreText(pb.ScoreTextRequest(texts=["a", "b", "c"]), timeout=T)
    await assert_code(call, Code.INVALID_ARGUMENT, "texts")
    await assert_answers(served)


async def test_message_over_max_body_bytes_is_too_large(grpc_factory: Factory) -> None:
    # Over max_body_bytes: the contract's too_large (INVALID_ARGUMENT, naming the body).
    served = await grpc_factory(max_body_bytes=2048)
    call = served.stub.ScoreText(pb.ScoreTextRequest(texts=["ab " * 1000]), timeout=T)
    await assert_code(call, Code.INVALID_ARGUMENT, "body")
    await assert_answers(served)


async def test_an_answer_over_the_send_limit_is_too_large(grpc_factory: Factory) -> None:
    """An answer the transport would refuse to send (RESOURCE_EXHAUSTED after all the
    work, which clients read as "retry later") is the contract's too_large, unary or in a
    stream, and the door keeps answering."""
    served = await grpc_factory(grpc_max_send_bytes=1024)
    big = pb.ScoreTextRequest(texts=TEXTS[:2], return_tokens=True, top_k=5)
    await assert_code(served.stub.ScoreText(big, timeout=T), Code.INVALID_ARGUMENT, "1024")
    stream = served.stub.ScoreTextStream(iter([big]), timeout=T)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() == Code.INVALID_ARGUMENT
    await assert_answers(served)


async def test_message_far_over_the_limit_is_refused_by_the_transport(
    grpc_factory: Factory,
) -> None:
    # Over twice max_body_bytes gRPC itself refuses the message, before the handler runs.
    served = await grpc_factory(max_body_bytes=2048)
    call = served.stub.ScoreText(pb.ScoreTextRequest(texts=["ab " * 2000]), timeout=T)
    await assert_code(call, Code.RESOURCE_EXHAUSTED, None)
    await assert_answers(served)


async def test_auth(grpc_factory: Factory) -> None:
    served = await grpc_factory(api_keys=["secret"])
    request, key = pb.ScoreTextRequest(texts=["hello world"]), (("authorization", "Bearer secret"),)
    for call in (
        served.stub.ScoreText(request, timeout=T),
        served.stub.ScoreText(request, timeout=T, metadata=(("authorization", "Bearer nope"),)),
        served.stub.ListModels(pb.ListModelsRequest(), timeout=T),
        served.stub.ScoreTextStream(iter([request]), timeout=T).read(),
    ):
        await assert_code(call, Code.UNAUTHENTICATED, "API key")
    response = await served.stub.ScoreText(request, timeout=T, metadata=key)
    assert response.results[0].num_scored_tokens > 0
    health = health_pb2_grpc.HealthStub(served.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=T)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health(grpc_factory: Factory) -> None:
    served = await grpc_factory()
    health, status = health_pb2_grpc.HealthStub(served.channel), health_pb2.HealthCheckResponse
    for serving, want in ((True, status.SERVING), (False, status.NOT_SERVING)):
        await served.door.set_serving(serving)
        for name in ("", "lmscore.v1.Scorer"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=T)
            assert reply.status == want, (name, serving)
    unknown = health.Check(health_pb2.HealthCheckRequest(service="nope.v1.X"), timeout=T)
    await assert_code(unknown, Code.NOT_FOUND, None)


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection(grpc_served: Served, version: str) -> None:
    """Both reflection versions (grpcurl falls back to v1alpha; newer tools speak only v1,
    whose messages are v1alpha's, field for field)."""
    info = grpc_served.channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="lmscore.v1.Scorer"),
    ]
    listed, files = [r async for r in info(iter(requests), timeout=T)]
    names = {s.name for s in listed.list_services_response.service}
    assert {"lmscore.v1.Scorer", "grpc.health.v1.Health", f"grpc.reflection.{version}.ServerReflection"} <= names  # fmt: skip
    (raw, *_) = files.file_descriptor_response.file_descriptor_proto
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert descriptor.package == "lmscore.v1" and "Scorer" in {s.name for s in descriptor.service}


def stream_requests() -> list[pb.ScoreTextRequest]:
    words = LONG.split()
    return [
        pb.ScoreTextRequest(
            texts=[" ".join(words[: 2 + 5 * i])] * (1 + i % 2), return_tokens=i == 3
        )
        for i in range(8)
    ]


async def test_stream_in_order_and_same_as_unary(grpc_served: Served) -> None:
    labels = {"endpoint": "score_text_stream", "protocol": "grpc", "code": "OK"}
    before = sample("lmscore_requests_total", **labels)
    requests = stream_requests()
    call = grpc_served.stub.ScoreTextStream(iter(requests), timeout=T)
    streamed = [response async for response in call]
    assert await call.code() == Code.OK
    assert len(streamed) == len(requests)
    for request, response in zip(requests, streamed, strict=True):
        unary = await grpc_served.stub.ScoreText(request, timeout=T)
        assert [r.num_tokens for r in response.results] == [r.num_tokens for r in unary.results]
        # Batched with its neighbours, not alone: float32 rounding differs a little.
        assert_close(as_dict(response), as_dict(unary))
    await eventually(lambda: sample("lmscore_requests_total", **labels) == before + 1)


async def test_stream_ends_at_bad_request(grpc_served: Served) -> None:
    requests = stream_requests()
    requests[3] = pb.ScoreTextRequest(texts=["hi"], return_tokens=True, top_k=21)
    call = grpc_served.stub.ScoreTextStream(iter(requests), timeout=T)
    received: list[pb.ScoreTextResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in call:
            received.append(response)
    assert info.value.code() == Code.INVALID_ARGUMENT and "top_k" in (info.value.details() or "")
    assert len(received) == 3  # the responses before the bad request, in order
    trailers = dict(info.value.trailing_metadata() or ())
    assert trailers["lmscore-stream-index"] == "3"  # which request: its param is its own
    assert trailers["lmscore-param"] == "top_k"
    for request, response in zip(requests, received, strict=False):
        unary = await grpc_served.stub.ScoreText(request, timeout=T)
        assert_close(as_dict(response), as_dict(unary))
    await assert_answers(grpc_served)


async def test_a_bug_in_a_stream_is_internal_and_recorded(
    grpc_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only our own errors were handled: gRPC answered UNKNOWN, nothing was logged, and
    # the call was counted as CANCELLED.
    served = await grpc_factory()
    real_score = served.engine.score_text
    calls = 0

    async def failing_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug")
        return await real_score(*args, **kwargs)

    monkeypatch.setattr(served.engine, "score_text", failing_second)
    labels = {"endpoint": "score_text_stream", "protocol": "grpc"}
    internal = sample("lmscore_requests_total", **labels, code="INTERNAL")
    cancelled = sample("lmscore_requests_total", **labels, code="CANCELLED")
    call = served.stub.ScoreTextStream(iter(stream_requests()[:3]), timeout=T)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in call:
            received.append(response)
    assert info.value.code() == Code.INTERNAL and "RuntimeError" in (info.value.details() or "")
    assert len(received) == 1
    assert dict(info.value.trailing_metadata() or ())["lmscore-stream-index"] == "1"
    await eventually(
        lambda: sample("lmscore_requests_total", **labels, code="INTERNAL") == internal + 1
    )
    assert sample("lmscore_requests_total", **labels, code="CANCELLED") == cancelled
    monkeypatch.setattr(served.engine, "score_text", real_score)
    await assert_answers(served)


async def test_abandoned_stream_is_cleaned_up(
    grpc_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await grpc_factory(max_batch_size=1)
    model = served.engine.registry.models["default"]
    real_forward = model.backend.forward
    forwarded: list[int] = []

    def slow_forward(items: Any, lane: int | None = None) -> Any:
        time.sleep(0.4)  # on the batcher's worker thread
        forwarded.append(len(items))
        return real_forward(items, lane)

    monkeypatch.setattr(model.backend, "forward", slow_forward)
    cancelled = {"endpoint": "score_text_stream", "protocol": "grpc", "code": "CANCELLED"}
    before = sample("lmscore_requests_total", **cancelled)
    dropped = {"model": "default", "reason": "cancelled"}
    dropped_before = sample("lmscore_batch_items_dropped_total", **dropped)
    rejected = sample("lmscore_requests_rejected_total", reason="cancelled")
    call = served.stub.ScoreTextStream(timeout=T)
    requests = stream_requests()
    for request in requests:
        await call.write(request)
    first = await call.read()
    assert first.results[0].num_tokens > 0
    call.cancel()
    assert await call.code() == Code.CANCELLED
    await eventually(
        lambda: (
            model.scheduler.queue_depth == 0
            and served.engine.inflight == 0
            and sample("lmscore_requests_total", **cancelled) == before + 1
        )
    )
    sent = sum(len(r.texts) for r in requests)
    assert sum(forwarded) < sent  # abandoned windows were dropped, not computed
    assert sample("lmscore_batch_items_dropped_total", **dropped) > dropped_before
    assert sample("lmscore_requests_rejected_total", reason="cancelled") == rejected + 1
    monkeypatch.setattr(model.backend, "forward", real_forward)
    await assert_answers(served)


async def test_requests_total(grpc_served: Served) -> None:
    def value(code: str) -> float:
        labels = {"endpoint": "score_text", "protocol": "grpc", "code": code}
        return sample("lmscore_requests_total", **labels)

    ok, invalid = value("OK"), value("INVALID_ARGUMENT")
    failed = value("UNKNOWN") + value("INTERNAL")  # other tests' (order-independent)
    rejected = sample("lmscore_requests_rejected_total", reason="invalid")
    await assert_answers(grpc_served)
    await assert_answers(grpc_served)
    await assert_code(grpc_served.stub.ScoreText(Text(), timeout=T), Invalid, None)
    await eventually(lambda: (value("OK"), value("INVALID_ARGUMENT")) == (ok + 2, invalid + 1))
    assert sample("lmscore_requests_rejected_total", reason="invalid") == rejected + 1
    assert value("UNKNOWN") + value("INTERNAL") == failed


async def test_continuations_parity_with_rest(
    grpc_served: Served, client: httpx.AsyncClient
) -> None:
    body = {
        "context": "the quick brown ",
        "continuations": ["fox", "dog 😀"],
        "return_tokens": True,
    }
    rest = await client.post("/v1/score/continuations", json=body)
    assert rest.status_code == 200, rest.text
    got = await grpc_served.stub.ScoreContinuations(pb.ScoreContinuationsRequest(**body), timeout=T)
    assert_close(as_dict(got), normal(rest.json()))
    with_bos = {**body, "prepend_bos": True}
    rest = await client.post("/v1/score/continuations", json=with_bos)
    assert rest.json()["context_tokens"] == got.context_tokens + 1
    got = await grpc_served.stub.ScoreContinuations(
        pb.ScoreContinuationsRequest(**with_bos), timeout=T
    )
    assert_close(as_dict(got), normal(rest.json()))
    bad = pb.ScoreContinuationsRequest(context="a", continuations=["b", ""])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_served.stub.ScoreContinuations(bad, timeout=T)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert "continuations[1]" in (caught.value.details() or "")
