"""Entropy and Min-K% scores through the engine and REST, against float64 on the tiny model."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from tolerances import BATCH_INVARIANCE_REL, batch_invariance_atol

from service.engine import Engine
from service.errors import InvalidRequest
from service.schemas import ChatScoreRequest, TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Grüße aus München!",
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567 café naïve",
]
RowsFn = Callable[[list[int]], np.ndarray]


def reference(ids: list[int], rows_fn: RowsFn) -> dict[str, np.ndarray]:
    """float64 per-position logprob of each next token, entropy, and spread of log p."""
    rows = rows_fn(ids)  # [n-1, V]: row p predicts ids[p+1]
    p = np.exp(rows)
    entropy = -(p * rows).sum(axis=1)
    std = np.sqrt((p * (rows + entropy[:, None]) ** 2).sum(axis=1))
    return {"lp": rows[np.arange(len(ids) - 1), ids[1:]], "entropy": entropy, "std": std}


async def test_entropy_and_min_k_equal_float64(
    tiny_engine: Engine, tokenizer: Any, reference_logprobs: RowsFn
) -> None:
    request = TextScoreRequest(
        texts=TEXTS, return_tokens=True, return_entropy=True, min_k=True, min_k_percent=30
    )
    response = (await tiny_engine.score_text(request)).response
    for text, result in zip(TEXTS, response.results, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False)
        ref = reference(ids, reference_logprobs)
        assert result.tokens is not None and result.tokens[0].entropy is None
        got = np.array([t.entropy for t in result.tokens[1:]])
        assert np.max(np.abs(got - ref["entropy"])) <= batch_invariance_atol(ref["entropy"])
        assert result.mean_entropy == pytest.approx(ref["entropy"].mean(), rel=BATCH_INVARIANCE_REL)
        chars = len(text) - result.tokens[1].start
        assert result.entropy_bits_per_char == pytest.approx(
            ref["entropy"].sum() / math.log(2) / chars, rel=BATCH_INVARIANCE_REL
        )
        count = max(1, int(len(ref["lp"]) * 0.3))
        want_min_k = np.sort(ref["lp"])[:count].mean()
        want_plus = np.sort((ref["lp"] + ref["entropy"]) / ref["std"])[:count].mean()
        assert result.min_k_logprob == pytest.approx(want_min_k, rel=1e-3, abs=1e-4)
        assert result.min_k_plus_plus == pytest.approx(want_plus, rel=1e-3, abs=1e-3)


async def test_nothing_extra_unless_asked(client: httpx.AsyncClient) -> None:
    body = (
        await client.post("/v1/score/text", json={"texts": TEXTS[:1], "return_tokens": True})
    ).json()
    result = body["results"][0]
    for field in ("mean_entropy", "entropy_bits_per_char", "min_k_logprob", "min_k_plus_plus"):
        assert field not in result
    assert "entropy" not in result["tokens"][1]


async def test_rest_fields_and_min_k_alone(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/score/text", json={"texts": TEXTS, "min_k": True})).json()
    for result in body["results"]:
        assert result["min_k_logprob"] <= 0 and math.isfinite(result["min_k_plus_plus"])
        assert "mean_entropy" not in result  # entropy was not asked for
    body = (
        await client.post("/v1/score/text", json={"texts": TEXTS, "return_entropy": True})
    ).json()
    assert all(r["mean_entropy"] > 0 and "min_k_logprob" not in r for r in body["results"])


@pytest.mark.parametrize("k", [0, -5, 100.5, "lots"])
async def test_bad_k_is_422_naming_the_field(client: httpx.AsyncClient, k: Any) -> None:
    response = await client.post(
        "/v1/score/text", json={"texts": ["a b"], "min_k": True, "min_k_percent": k}
    )
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "min_k_percent"


async def test_chat_entropy_counts_scored_tokens_only(tiny_engine: Engine) -> None:
    conversation = [
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "the quick brown fox"},
    ]
    request = ChatScoreRequest(
        conversations=[conversation], return_tokens=True, return_entropy=True
    )
    result = (await tiny_engine.score_chat(request)).response.results[0]
    assert result.tokens is not None
    scored = [t.entropy for t in result.tokens if t.scored]
    assert result.mean_entropy == pytest.approx(float(np.mean(scored)), rel=1e-6)


async def test_top_k_only_backend_refuses_with_422(engine_factory: Callable[..., Engine]) -> None:
    """A backend that sees only top-k logprobs (vLLM) must refuse, never guess."""
    engine = engine_factory()
    backend: Any = engine.get_model("default").backend
    backend.info = dataclasses.replace(backend.info, full_distribution=False)
    for fields, param in (({"return_entropy": True}, "return_entropy"), ({"min_k": True}, "min_k")):
        with pytest.raises(InvalidRequest) as caught:
            await engine.score_text(TextScoreRequest(texts=["a b c"], **fields))
        assert caught.value.param == param and "full distribution" in str(caught.value)
