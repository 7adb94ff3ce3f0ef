"""Fuzzing the gRPC door: malformed and extreme messages for every Scorer method.

Messages are built by hypothesis from the proto descriptors (any field set or not: huge
and negative ints, unknown enum values, NaN and infinite doubles, empty, huge and odd
Unicode strings, many repeated entries); raw bytes (random, or a valid message with a
random splice) go through a serializer-less channel so the server has to parse garbage.
Every call must end in a status a client can act on (never INTERNAL or UNKNOWN), an
accepted call must answer one result per input, and afterwards the door must still score
a normal request and report SERVING. Examples are derandomized, so CI runs are
reproducible; limits are small so that large inputs are refused cheaply.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from fuzzing import fuzz_settings
from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.backends import dynamic_batcher
from service.backends.hf import HFBackend

if TYPE_CHECKING:  # fixtures and their types live in tests/unit/api/conftest.py
    from conftest import Served

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEADLINE = 30.0  # of every call: a hang fails, not stalls
T = TypeVar("T")
Code = grpc.StatusCode
Factory = Callable[..., Awaitable["Served"]]
SCORER = pb.DESCRIPTOR.services_by_name["Scorer"]
METHODS = [method.name for method in SCORER.methods]
# How a fuzzed call may end: answered, or refused with a status the client can act on.
ANSWERS = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED}
LIMITS = {
    "max_texts_per_request": 8,
    "max_messages_per_conversation": 8,
    "max_chars_per_text": 256,
    "max_compare_chars": 256,
    "max_body_bytes": 16 * 1024,  # the transport refuses messages over 32 KiB
}
FUZZ = fuzz_settings(max_examples=40)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
strings = st.one_of(
    st.sampled_from(["", "default", "twin", "user", "assistant", "hello world", "\x00"]),
    st.sampled_from(["😀" * 80, " \t\n" * 30, "é\u0301\u202e", "日本語", "x" * 20_000]),
    st.text(max_size=40),
)
doubles = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 100.0, 1e308]) | st.floats()
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: strings,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: doubles,
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_INT32: st.sampled_from([0, 1, -1, 20, 21, 64, *INT32])
    | st.integers(*INT32),
    FieldDescriptor.TYPE_INT64: st.sampled_from([0, -1, *INT64]) | st.integers(*INT64),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
}


# Valid values of the fields known by name (the rest take any value of their type), so
# that plausible messages are accepted and scored, with odd texts.
NAMES = ["", "default", "twin"]
ROLES = ["system", "user", "assistant", "tool"]
text = st.sampled_from(["hello world", "😀 é\u0301 日本語", "\x00\x01 \t\n", "ab " * 30])
text |= st.text(min_size=1, max_size=40)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(NAMES),
    "score_roles": st.lists(st.sampled_from(ROLES), max_size=2),
    "content": text,
    "context": st.text(max_size=40),
    "top_k": st.integers(0, 20),
    "stride": st.integers(1, 63),
    "min_k_percent": st.floats(0.5, 100),
    "overflow": st.sampled_from([value.number for value in pb.Overflow.DESCRIPTOR.values]),
    "reference": st.nothing(),  # none is loaded
}
# What a plausible message always has: something to score, and models and roles.
INPUTS: dict[str, st.SearchStrategy[Any]] = {
    "models": st.lists(st.sampled_from(NAMES[1:]), min_size=2, max_size=2),
    "role": st.sampled_from(ROLES),
    "texts": st.lists(text, min_size=1, max_size=4),
    "continuations": st.lists(text, min_size=1, max_size=4),
    "conversations": st.lists(
        st.deferred(lambda: messages(pb.Conversation.DESCRIPTOR, plausible=True)),
        min_size=1,
        max_size=2,
    ),
    "messages": st.lists(
        st.deferred(lambda: messages(pb.ChatMessage.DESCRIPTOR, plausible=True)),
        min_size=1,
        max_size=4,
    ),
}


def messages(descriptor: Descriptor, plausible: bool) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with any subset of its fields set to fuzzed values; or
    (``plausible``) with something to score and valid values where known by name."""
    fields = {field.name: field_values(field, plausible) for field in descriptor.fields}
    required: dict[str, st.SearchStrategy[Any]] = {}
    if plausible:
        fields |= {name: PLAUSIBLE[name] for name in fields.keys() & PLAUSIBLE.keys()}
        required = {name: INPUTS[name] for name in fields.keys() & INPUTS.keys()}
        fields = {name: values for name, values in fields.items() if name not in required}
    build = message_factory.GetMessageClass(descriptor)
    return st.fixed_dictionaries(required, optional=fields).map(lambda values: build(**values))


def requests(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Plausible messages and extreme ones."""
    return messages(descriptor, plausible=True) | messages(descriptor, plausible=False)


# A Struct (a chat message's extra keys): JSON objects with odd keys and values, nested.
json_values = st.recursive(
    st.none() | st.booleans() | doubles | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=12,
)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    made = struct_pb2.Struct()
    made.update(values)
    return made


structs = st.dictionaries(strings, json_values, max_size=4).map(_struct)


def field_values(field: FieldDescriptor, plausible: bool) -> st.SearchStrategy[Any]:
    """Values for ``field``: its type's extremes, enums out of range, lists of any length."""
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
        one: st.SearchStrategy[Any] = structs
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        one = st.deferred(lambda: messages(field.message_type, plausible))
    elif field.type == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        one = st.sampled_from(known) | st.integers(*INT32)  # proto3 enums keep unknown values
    elif field.type in SCALARS:
        one = SCALARS[field.type]
    else:
        raise NotImplementedError(f"no fuzzed values for {field.full_name} (type {field.type})")
    return st.lists(one, max_size=12) if field.is_repeated else one


def splice(raw: bytes, start: int, garbage: bytes, cut: int) -> bytes:
    """``raw`` with ``cut`` bytes from ``start`` replaced by ``garbage``."""
    start = min(start, len(raw))
    return raw[:start] + garbage + raw[start + cut :]


def payloads(method: MethodDescriptor, one: st.SearchStrategy[T]) -> st.SearchStrategy[list[T]]:
    """One request for a unary method, one to four for a stream."""
    if method.client_streaming:
        return st.lists(one, min_size=1, max_size=4)
    return one.map(lambda request: [request])


def raw_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid message's bytes with a random splice."""
    valid = requests(descriptor).map(lambda message: message.SerializeToString())
    mutated = st.builds(splice, valid, st.integers(0, 64), st.binary(max_size=8), st.integers(0, 8))
    return st.binary(max_size=96) | mutated


async def call(
    served: Served, method: MethodDescriptor, sent: list[bytes]
) -> tuple[grpc.StatusCode, str | None, list[bytes]]:
    """The method's status and details, and the replies it sent, for payloads ``sent``."""
    path = f"/{SCORER.full_name}/{method.name}"
    replies: list[bytes] = []
    try:
        if method.client_streaming:
            # One request at a time: the aio client reports a write that races the server's
            # end of the stream as INTERNAL "Internal error from Core", hiding the status
            # the server sent (grpc/grpc#36066).
            stream = served.channel.stream_stream(path)(timeout=DEADLINE)
            for payload in sent:
                await stream.write(payload)
                replies.append(await stream.read())
            await stream.done_writing()
            assert await stream.read() is grpc.aio.EOF
        else:
            replies.append(await served.channel.unary_unary(path)(sent[0], timeout=DEADLINE))
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details(), replies
    return Code.OK, "", replies


def inputs(request: Message) -> int:
    """How many results an accepted request is answered with (one per text,
    conversation or continuation)."""
    for name in ("texts", "conversations", "continuations"):
        if name in request.DESCRIPTOR.fields_by_name:
            return len(getattr(request, name))
    raise AssertionError(f"{request.DESCRIPTOR.full_name} has no inputs")


async def fuzz(
    strategy: st.SearchStrategy[Any], check: Callable[[Any], Coroutine[Any, Any, None]]
) -> None:
    """``check`` each example of ``strategy`` on this loop; hypothesis runs on a thread."""
    loop = asyncio.get_running_loop()

    @FUZZ
    @given(example=strategy)
    def checked(example: Any) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result()

    await asyncio.to_thread(checked)


async def door(grpc_factory: Factory, model_dir: Path) -> Served:
    """A door with small limits whose engine also serves ``twin``, the same model again,
    so comparisons go all the way."""
    served = await grpc_factory(**LIMITS)
    engine = served.engine
    backend = HFBackend(model_dir, dtype="float32", device="cpu")
    engine.registry.add("twin", "sha256:twin", dynamic_batcher(backend, "twin", engine.settings))
    return served


async def assert_still_serving(served: Served) -> None:
    """A normal ScoreText is answered, health says SERVING, no work is left in flight."""
    request = pb.ScoreTextRequest(texts=["hello world"])
    response = await served.stub.ScoreText(request, timeout=DEADLINE)
    assert response.results[0].num_scored_tokens > 0
    health = health_pb2_grpc.HealthStub(served.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    deadline = time.monotonic() + 15  # a cancelled stream's work may end just after it
    while served.engine.inflight:
        assert time.monotonic() < deadline, "work left in flight after the fuzzing"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("name", METHODS)
async def test_extreme_messages(grpc_factory: Factory, tiny_model_dir: Path, name: str) -> None:
    """Messages with fuzzed fields end OK (one result per input) or with a status a
    client can act on, never INTERNAL or UNKNOWN; the door keeps serving."""
    served = await door(grpc_factory, tiny_model_dir)
    method = SCORER.methods_by_name[name]
    reply_type = message_factory.GetMessageClass(method.output_type)

    async def check(requests: list[Message]) -> None:
        sent = [request.SerializeToString() for request in requests]
        code, details, replies = await call(served, method, sent)
        assert code in ANSWERS, (name, code, details)
        for request, raw in zip(requests, replies, strict=False):  # a stream may end early
            reply = reply_type.FromString(raw)
            if "results" in reply.DESCRIPTOR.fields_by_name:  # all but ListModels
                assert len(reply.results) == inputs(request), (name, request)

    await fuzz(payloads(method, requests(method.input_type)), check)
    await assert_still_serving(served)


@pytest.mark.parametrize("name", METHODS)
async def test_raw_bytes(grpc_factory: Factory, tiny_model_dir: Path, name: str) -> None:
    """Bytes that are not (quite) a message of the method's type end with a status a
    client can act on, never INTERNAL or UNKNOWN; the door keeps serving."""
    served = await door(grpc_factory, tiny_model_dir)
    method = SCORER.methods_by_name[name]

    async def check(sent: list[bytes]) -> None:
        code, details, _ = await call(served, method, sent)
        assert code in ANSWERS, (name, code, details)

    await fuzz(payloads(method, raw_bytes(method.input_type)), check)
    await assert_still_serving(served)
