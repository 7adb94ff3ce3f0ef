"""``Client``, ``AsyncClient`` and ``GrpcClient`` against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from compare import assert_close
from prometheus_client.parser import text_string_to_metric_families
from server_process import RunningServer

from lmscore_client import (
    AsyncClient,
    Client,
    ContinuationResponse,
    Distribution,
    GrpcClient,
    InvalidRequestError,
    NotFoundError,
    ScoreResponse,
    TooLargeError,
)

TEXTS = ["The capital of France is Paris.", "Hello", "asdkj qwpoe zmxn ,,,, 1238 !!!"]
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_client(server: RunningServer) -> Iterator[GrpcClient]:
    with GrpcClient(server.grpc, timeout=120) as c:
        yield c


@pytest.mark.parametrize(
    "options",
    [{}, {"return_tokens": True, "top_k": 3}, {"prepend_bos": True, "return_tokens": True}],
)
def test_score_text_equals_a_direct_post(
    client: Client, http: httpx.Client, options: dict[str, object]
) -> None:
    direct = http.post("/v1/score/text", json={"texts": TEXTS, **options})
    assert direct.status_code == 200
    got = client.score_text(TEXTS, **options)  # type: ignore[arg-type]
    assert_close(got, ScoreResponse.from_json(direct.json()))  # two requests: contract tolerance
    assert got.results[1].num_scored_tokens == (1 if options.get("prepend_bos") else 0)
    if not options.get("prepend_bos"):
        assert got.results[1].ppl is None and got.results[1].bits_per_char is None


def test_score_chat_equals_a_direct_post(client: Client, http: httpx.Client) -> None:
    body = {"conversations": [CHAT], "return_tokens": True, "include_end_of_turn": True}
    direct = ScoreResponse.from_json(http.post("/v1/score/chat", json=body).json())
    got = client.score_chat([CHAT], return_tokens=True, include_end_of_turn=True)
    assert_close(got, direct)  # two requests: contract tolerance
    messages = got.results[0].messages
    assert messages is not None and [m.scored for m in messages] == [False, False, True]
    plain = client.score_chat(CHAT).results[0]  # one conversation; end of turn not scored
    assert plain.messages is not None
    assert plain.num_scored_tokens == plain.messages[2].num_scored_tokens
    assert plain.num_scored_tokens < messages[2].num_scored_tokens


def test_models(client: Client, grpc_client: GrpcClient, http: httpx.Client) -> None:
    cards = client.models()
    assert [c.id for c in cards] == ["default"]
    assert cards[0].revision == http.get("/v1/models").json()["data"][0]["revision"]
    assert cards[0].revision.startswith("sha256:")
    assert grpc_client.models() == cards


@pytest.mark.parametrize(
    "options",
    [{}, {"return_tokens": True, "top_k": 2}, {"prepend_bos": True}, {"overflow": "truncate"}],
)
def test_grpc_equals_rest_for_texts(
    client: Client, grpc_client: GrpcClient, options: dict[str, object]
) -> None:
    assert_close(grpc_client.score_text(TEXTS, **options), client.score_text(TEXTS, **options))  # type: ignore[arg-type]


def test_grpc_equals_rest_for_chats(client: Client, grpc_client: GrpcClient) -> None:
    for options in ({}, {"return_tokens": True, "top_k": 2, "score_roles": ["user", "assistant"]}):
        rest = client.score_chat([CHAT, CHAT[1:]], **options)  # type: ignore[arg-type]
        assert_close(grpc_client.score_chat([CHAT, CHAT[1:]], **options), rest)  # type: ignore[arg-type]


def test_distribution_scores_over_rest_grpc_and_async(
    server: RunningServer, client: Client, grpc_client: GrpcClient, http: httpx.Client
) -> None:
    asked = Distribution(entropy=True, min_k=True, min_k_percent=50, words=True)
    body = {"texts": TEXTS, "return_tokens": True, "return_entropy": True, "min_k": True}
    body["words"] = True
    direct = http.post("/v1/score/text", json={**body, "min_k_percent": 50})
    assert direct.status_code == 200
    rest = client.score_text(TEXTS, return_tokens=True, distribution=asked)
    assert_close(rest, ScoreResponse.from_json(direct.json()))
    assert_close(grpc_client.score_text(TEXTS, return_tokens=True, distribution=asked), rest)

    async def run() -> ScoreResponse:
        async with AsyncClient(server.url, timeout=120) as a:
            return await a.score_text(TEXTS, return_tokens=True, distribution=asked)

    assert_close(asyncio.run(run()), rest)
    first = rest.results[0]
    assert first.mean_entropy is not None and first.entropy_bits_per_char is not None
    assert first.min_k_logprob is not None and first.min_k_logprob <= 0
    assert first.tokens is not None and first.tokens[0].entropy is None
    assert all(t.entropy is not None and t.entropy >= 0 for t in first.tokens[1:])
    assert first.words is not None and "".join(w.text for w in first.words) == TEXTS[0]
    assert first.words[1].logprob_corrected is not None
    chat = client.score_chat([CHAT], distribution=Distribution(entropy=True)).results[0]
    assert chat.mean_entropy is not None and chat.min_k_logprob is None
    assert (
        grpc_client.score_chat([CHAT], distribution=Distribution(min_k=True))
        .results[0]
        .min_k_plus_plus
        is not None
    )


def test_continuations_over_rest_grpc_and_async(
    server: RunningServer, client: Client, grpc_client: GrpcClient, http: httpx.Client
) -> None:
    context, candidates = "The capital of France is", [" Paris.", " a small fish", "🚀"]
    body = {"context": context, "continuations": candidates, "return_tokens": True}
    direct = ContinuationResponse.from_json(http.post("/v1/score/continuations", json=body).json())
    rest = client.score_continuations(context, candidates, return_tokens=True)
    assert_close(rest, direct)
    assert_close(grpc_client.score_continuations(context, candidates, return_tokens=True), rest)

    async def run() -> ContinuationResponse:
        async with AsyncClient(server.url, timeout=120) as a:
            return await a.score_continuations(context, candidates, return_tokens=True)

    assert_close(asyncio.run(run()), rest)
    paris, fish, _ = rest.results
    assert paris.sum_logprob > fish.sum_logprob
    assert paris.tokens is not None and len(paris.tokens) == paris.num_tokens
    # Equal to the same text scored whole (the context is a prefix at a token boundary).
    whole = client.score_text(context + " Paris.", return_tokens=True).results[0]
    assert whole.tokens is not None
    tail = [t.logprob for t in whole.tokens[-paris.num_tokens :]]
    assert paris.sum_logprob == pytest.approx(sum(tail), rel=1e-4, abs=1e-4)  # type: ignore[arg-type]


def test_errors_carry_type_and_param(client: Client, grpc_client: GrpcClient) -> None:
    with pytest.raises(InvalidRequestError) as rest:
        client.score_text(["fine", ""])
    assert (rest.value.status, rest.value.type, rest.value.param) == (
        422, "invalid_request", "texts[1]",
    )  # fmt: skip
    with pytest.raises(InvalidRequestError) as grpc_error:
        grpc_client.score_text(["fine", ""])
    assert grpc_error.value.grpc_code == "INVALID_ARGUMENT"
    assert grpc_error.value.param == "texts[1]"
    with pytest.raises(NotFoundError) as missing:
        client.score_text("x y", model="no-such-model")
    assert missing.value.status == 404 and missing.value.type == "not_found"
    with pytest.raises(NotFoundError) as missing_grpc:
        grpc_client.score_text("x y", model="no-such-model")
    assert missing_grpc.value.param == "model"  # from the trailers; the message has no prefix
    with pytest.raises(TooLargeError) as too_many:
        grpc_client.score_text(["a"] * 1025)  # INVALID_ARGUMENT, too_large as REST's 413
    assert (too_many.value.status, too_many.value.type, too_many.value.param) == (
        413, "too_large", "texts",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("texts", "conversation", "param"),
    [
        (["fine", 42], None, "texts[1]"),
        (["fine", "lone \udc80 surrogate"], None, "texts[1]"),  # scraped JSON has them
        (None, [{"role": "user", "content": None}, CHAT[-1]], "conversations[0][0].content"),
        (None, [{"role": "user", "content": "\ud83d"}, CHAT[-1]], "conversations[0][0].content"),
        (None, [{"content": "no role"}, CHAT[-1]], "conversations[0][0].role"),
    ],
)
def test_grpc_refuses_what_rest_refuses(
    client: Client,
    grpc_client: GrpcClient,
    texts: list[Any] | None,
    conversation: list[Any] | None,
    param: str,
) -> None:
    """A value a proto string field cannot hold: 422 with its field over both doors, not
    None taken as "" (a null message scored as empty), a TypeError, nor a
    UnicodeEncodeError before the request is sent."""
    for door in (client, grpc_client):
        with pytest.raises(InvalidRequestError) as refused:
            if texts is not None:
                door.score_text(texts)
            else:
                door.score_chat([conversation])
        assert refused.value.status == 422 and refused.value.param == param, door
    if texts is not None:  # and bytes, which JSON cannot carry to the REST door at all
        with pytest.raises(InvalidRequestError, match="bytes"):
            grpc_client.score_text([*texts[:-1], b"bytes"])


def test_a_message_over_grpc_limits_is_too_large_and_not_retried(
    server: RunningServer, http: httpx.Client
) -> None:
    """gRPC answers RESOURCE_EXHAUSTED for a message over its size limit too; that is not a
    full queue, and sending it again cannot help."""

    def grpc_score_text_calls() -> float:
        families = text_string_to_metric_families(http.get("/metrics").text)
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "lmscore_requests_total"
            and sample.labels.get("protocol") == "grpc"
            and sample.labels.get("endpoint") == "score_text"
        )

    before = grpc_score_text_calls()
    with (
        GrpcClient(server.grpc, timeout=120, max_message_bytes=3000) as small,
        pytest.raises(TooLargeError) as error,
    ):
        small.score_text(["Some text to score with its tokens. " * 20], return_tokens=True, top_k=5)
    assert error.value.status == 413 and error.value.grpc_code == "RESOURCE_EXHAUSTED"
    assert grpc_score_text_calls() == before + 1  # one call: not retried


def test_async_client_matches_the_blocking_one(server: RunningServer, client: Client) -> None:
    async def score() -> list[ScoreResponse]:
        async with AsyncClient(server.url, timeout=120) as ac:
            return list(await asyncio.gather(*(ac.score_text([t]) for t in TEXTS)))

    for text, got in zip(TEXTS, asyncio.run(score()), strict=True):
        assert_close(got.results, client.score_text([text]).results)


def test_grpc_stream_answers_in_order_like_unary_calls(grpc_client: GrpcClient) -> None:
    requests = [TEXTS[:2], TEXTS[2], [TEXTS[0]] * 3, TEXTS[1:]]
    streamed = list(grpc_client.score_text_stream(iter(requests), return_tokens=True, top_k=2))
    assert len(streamed) == len(requests)
    for texts, response in zip(requests, streamed, strict=True):
        unary = grpc_client.score_text(texts, return_tokens=True, top_k=2)
        assert_close(response, unary)


def test_grpc_stream_error_names_the_request_it_belongs_to(grpc_client: GrpcClient) -> None:
    answered: list[ScoreResponse] = []
    with pytest.raises(InvalidRequestError) as server_side:  # the server refuses the empty text
        for response in grpc_client.score_text_stream([["a b"], ["c d"], ["fine", ""], ["e"]]):
            answered.append(response)
    assert len(answered) == 2
    assert (server_side.value.stream_index, server_side.value.param) == (2, "texts[1]")
    answered.clear()
    with pytest.raises(InvalidRequestError) as client_side:  # not text: refused before sending
        for response in grpc_client.score_text_stream([["a b"], [42], ["e"]]):  # type: ignore[list-item]
            answered.append(response)
    assert len(answered) == 1
    assert (client_side.value.stream_index, client_side.value.param) == (1, "texts[0]")


def test_grpc_stream_raises_the_callers_own_error(grpc_client: GrpcClient) -> None:
    """An error of the caller's iterator reaches the caller as itself, after the answers
    to the requests before it (not as a server error)."""

    def requests() -> Any:
        yield ["a b"]
        raise OSError("the corpus file went away")

    answered = []
    with pytest.raises(OSError, match="went away"):
        for response in grpc_client.score_text_stream(requests()):
            answered.append(response)
    assert len(answered) == 1
