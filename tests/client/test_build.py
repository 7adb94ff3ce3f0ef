"""The request builder: one definition of the options, the bodies every client sends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from lmscore_client import (
    AsyncClient,
    Client,
    Distribution,
    GrpcClient,
    InvalidRequestError,
    ScoreOptions,
    build,
)
from lmscore_client._pb.lmscore.v1 import scoring_pb2 as pb
from lmscore_client._pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from lmscore_client.build import ChatFields, TextFields

OK = {
    "model": "m",
    "model_revision": "r",
    "results": [],
    "aggregate": {"num_scored_tokens": 0, "sum_logprob": 0.0, "mean_nll": None, "ppl": None},
    "usage": {"prompt_tokens": 0},
}


def test_keyword_options_are_the_options_fields() -> None:
    option_names = {f.name for f in dataclasses.fields(ScoreOptions)}
    assert set(TextFields.__annotations__) | set(ChatFields.__annotations__) == option_names
    assert set(TextFields.__annotations__) - set(ChatFields.__annotations__) == {"prepend_bos"}


def test_text_body_defaults_and_optional_fields() -> None:
    body = build.score_text("one").body
    assert body == {  # no model: the server picks its default
        "texts": ["one"],
        "return_tokens": False,
        "top_k": 0,
        "overflow": "error",
        "prepend_bos": False,
    }
    options = ScoreOptions(
        model="m",
        stride=64,
        reference="web",
        distribution=Distribution(entropy=True, min_k=True, min_k_percent=10.0),
        score_roles=["user"],  # conversations only: not in a text body
    )
    body = build.score_text(["a", "b"], options).body
    assert body is not None
    assert body["stride"] == 64 and body["reference"] == "web"
    assert body["return_entropy"] is True and body["min_k_percent"] == 10.0
    assert "score_roles" not in body and "include_end_of_turn" not in body


def test_chat_body_wraps_one_conversation_and_leaves_out_text_fields() -> None:
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    options = ScoreOptions(prepend_bos=True, score_roles=("assistant", "user"))
    api_call = build.score_chat(conversation, options)
    assert api_call.path == "/v1/score/chat"
    assert api_call.body is not None
    assert api_call.body["conversations"] == [conversation]
    assert api_call.body["score_roles"] == ["assistant", "user"]
    assert "prepend_bos" not in api_call.body


def test_one_options_object_serves_texts_and_chats_words_going_to_texts_only(
    recording_grpc: tuple[_RecordingScorer, str],
) -> None:
    # The server's chat request has no `words` (extra fields are refused with 422), and
    # gRPC's ScoreChatRequest has no such field: chats with these options failed.
    options = ScoreOptions(distribution=Distribution(entropy=True, words=True))
    text_body = build.score_text(["a"], options).body
    chat_body = build.score_chat([{"role": "user", "content": "hi"}], options).body
    assert text_body is not None and chat_body is not None
    assert text_body["words"] is True and text_body["return_entropy"] is True
    assert "words" not in chat_body and chat_body["return_entropy"] is True
    scorer, target = recording_grpc
    with GrpcClient(target, timeout=10) as client:
        client.score_chat([{"role": "user", "content": "hi"}], options)
    (chat,) = scorer.requests
    assert chat.return_entropy


def _recording_transport(seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=OK)

    return httpx.MockTransport(handle)


def test_blocking_and_async_clients_send_the_builders_body() -> None:
    options = ScoreOptions(model="m", top_k=3, return_tokens=True)
    expected = build.score_text(["x"], options.with_fields({"reference": "ref"})).body
    seen: list[dict[str, Any]] = []
    with Client("http://test", transport=_recording_transport(seen)) as client:
        client.score_text(["x"], options, reference="ref")

    async def send() -> None:
        transport = _recording_transport(seen)
        async with AsyncClient("http://test", transport=transport) as client:
            await client.score_text(["x"], options, reference="ref")

    asyncio.run(send())
    assert seen == [expected, expected]


class _RecordingScorer(pb_grpc.ScorerServicer):
    """A gRPC server side that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def ScoreText(self, request: Any, context: Any) -> pb.ScoreTextResponse:
        self.requests.append(request)
        return pb.ScoreTextResponse(model="m")

    def ScoreChat(self, request: Any, context: Any) -> pb.ScoreChatResponse:
        self.requests.append(request)
        return pb.ScoreChatResponse(model="m")


@pytest.fixture
def recording_grpc() -> Iterator[tuple[_RecordingScorer, str]]:
    scorer = _RecordingScorer()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_ScorerServicer_to_server(scorer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield scorer, f"127.0.0.1:{port}"
    server.stop(None)


def test_grpc_client_sends_the_same_fields(recording_grpc: tuple[_RecordingScorer, str]) -> None:
    scorer, target = recording_grpc
    options = ScoreOptions(model="m", overflow="sliding_window", stride=32, reference="ref")
    with GrpcClient(target, timeout=10) as client:
        client.score_text(["x", "y"], options, top_k=2, return_tokens=True)
        client.score_chat([{"role": "user", "content": "hi"}], options, score_roles=["user"])
    text, chat = scorer.requests
    assert list(text.texts) == ["x", "y"] and text.model == "m" and text.top_k == 2
    assert text.overflow == pb.OVERFLOW_SLIDING_WINDOW and text.stride == 32
    assert text.reference == "ref"
    assert chat.conversations[0].messages[0].content == "hi"
    assert list(chat.score_roles) == ["user"]


def test_grpc_client_sends_a_messages_other_keys(
    recording_grpc: tuple[_RecordingScorer, str],
) -> None:
    """Keys beside role and content (name, tool_calls...) go in ``extra``, as REST's JSON
    carries them; a value JSON cannot hold is refused before sending."""
    scorer, target = recording_grpc
    call = {"id": "c1", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": "", "name": "bot", "tool_calls": [call]}
    with GrpcClient(target, timeout=10) as client:
        client.score_chat([{"role": "user", "content": "hi"}, message])
        with pytest.raises(InvalidRequestError) as refused:
            client.score_chat([{"role": "user", "content": "hi", "when": object()}])
    (chat,) = scorer.requests
    sent = chat.conversations[0].messages
    assert not sent[0].HasField("extra")
    assert MessageToDict(sent[1].extra) == {"name": "bot", "tool_calls": [call]}
    assert refused.value.param == "conversations[0][0]"


def test_continuations_send_prepend_bos_only_when_set() -> None:
    unset = build.score_continuations("ctx", ["a"], model=None, return_tokens=False)
    assert unset.body is not None and "prepend_bos" not in unset.body
    for value in (True, False):
        call = build.score_continuations(
            "ctx", ["a"], model=None, return_tokens=False, prepend_bos=value
        )
        assert call.body is not None and call.body["prepend_bos"] is value
