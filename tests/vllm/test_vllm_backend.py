"""The contract served by vLLM's engine: same numbers (within bf16 rounding), same API."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
import httpx
import pytest
from corpus import CHATS, ENGLISH, GIBBERISH, OTHER
from prometheus_client.parser import text_string_to_metric_families
from reference import chat_ppl, text_ppl
from server_process import RunningServer

from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.api.pb.lmscore.v1 import scoring_pb2_grpc as rpc

TEXTS = ENGLISH + OTHER + GIBBERISH


def metric(url: str, name: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_models_say_vllm(http: httpx.Client) -> None:
    (card,) = http.get("/v1/models").json()["data"]
    assert card["backend"] == "vllm" and card["max_context"] == 2048
    assert card["revision"].startswith("sha256:")


def test_text_ppl_within_3_percent_of_float32_transformers(
    http: httpx.Client, reference: Any
) -> None:
    body = http.post("/v1/score/text", json={"texts": TEXTS}).json()
    for text, result in zip(TEXTS, body["results"], strict=True):
        ppl, count = text_ppl(reference, text)
        assert result["num_scored_tokens"] == count
        assert math.isclose(result["ppl"], ppl, rel_tol=0.03), text


@pytest.mark.parametrize("index", range(len(CHATS)))
def test_chat_ppl_within_3_percent(http: httpx.Client, reference: Any, index: int) -> None:
    body = http.post("/v1/score/chat", json={"conversations": [CHATS[index]]}).json()
    ppl, count = chat_ppl(reference, CHATS[index])
    assert body["results"][0]["num_scored_tokens"] == count
    assert math.isclose(body["results"][0]["ppl"], ppl, rel_tol=0.03)


def test_token_detail_and_top_k(http: httpx.Client) -> None:
    text = ENGLISH[0]
    body = http.post(
        "/v1/score/text", json={"texts": [text], "return_tokens": True, "top_k": 3}
    ).json()
    result = body["results"][0]
    tokens = result["tokens"]
    assert "".join(t["text"] for t in tokens) == text
    assert tokens[0]["logprob"] is None and tokens[0]["top"] is None
    assert math.isclose(sum(t["logprob"] for t in tokens[1:]), result["sum_logprob"], rel_tol=1e-6)
    for token in tokens[1:]:
        top = token["top"]
        assert len(top) == 3 and token["rank"] >= 1
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        if token["rank"] == 1:
            assert top[0]["id"] == token["id"]
        elif token["rank"] <= 3:
            assert top[token["rank"] - 1]["id"] == token["id"]


def test_grpc_and_openai_doors(vllm_server: RunningServer, http: httpx.Client) -> None:
    rest = http.post("/v1/score/text", json={"texts": ENGLISH[:2]}).json()
    stub = rpc.ScorerStub(grpc.insecure_channel(vllm_server.grpc))
    reply = stub.ScoreText(pb.ScoreTextRequest(texts=ENGLISH[:2]), timeout=120)
    for a, b in zip(rest["results"], reply.results, strict=True):
        assert math.isclose(a["sum_logprob"], b.sum_logprob, rel_tol=1e-3)
    completion = http.post(
        "/v1/completions",
        json={"prompt": "The capital of France is", "echo": True, "logprobs": 1, "max_tokens": 1},
    ).json()
    logprobs = completion["choices"][0]["logprobs"]
    assert logprobs["token_logprobs"][0] is None
    assert (
        len(logprobs["tokens"])
        == len(http.post("/tokenize", json={"prompt": "The capital of France is"}).json()["tokens"])
        + 1
    )
    assert logprobs["token_logprobs"][-1] == max(logprobs["top_logprobs"][-1].values())


async def send_and_leave(url: str) -> None:
    long_text = " ".join(ENGLISH * 6)
    async with httpx.AsyncClient(base_url=url, timeout=0.5) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post("/v1/score/text", json={"texts": [long_text] * 16})


def test_a_request_whose_client_leaves_is_aborted_in_vllm(
    vllm_server: RunningServer, http: httpx.Client
) -> None:
    before = metric(vllm_server.url, "lmscore_backend_aborts_total")
    asyncio.run(send_and_leave(vllm_server.url))
    for _ in range(100):
        if metric(vllm_server.url, "lmscore_backend_aborts_total") > before:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert metric(vllm_server.url, "lmscore_backend_aborts_total") > before
    assert http.post("/v1/score/text", json={"texts": ["Still serving."]}).status_code == 200


@pytest.mark.parametrize("overflow", ["truncate", "sliding_window"])
def test_windows_of_the_whole_context(http: httpx.Client, overflow: str) -> None:
    """A truncated text and each full sliding window are max_context tokens long, which
    vLLM refuses as its max_model_len (it keeps room for the generated token): each was a
    500. They are scored, with the context the models listing declares."""
    (card,) = http.get("/v1/models").json()["data"]
    long = " ".join(ENGLISH) * 13  # about 2,260 tokens: over the context of 2,048
    answer = http.post("/v1/score/text", json={"texts": [long], "overflow": overflow})
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    if overflow == "truncate":
        assert result["truncated"] is True and result["num_tokens"] == card["max_context"]
    else:
        assert result["num_tokens"] > card["max_context"]
        assert result["num_scored_tokens"] == result["num_tokens"] - 1
