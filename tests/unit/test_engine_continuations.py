"""Continuations of one context: equal to scoring context + continuation as one text,
with the context computed once (token tree) or per pair (padded backends)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from tolerances import BATCH_INVARIANCE_REL

from service.engine import Engine
from service.schemas import ContinuationRequest

ASYNC = pytest.mark.asyncio(loop_scope="session")
URL = "/v1/score/continuations"
CONTEXT = "The quick brown fox jumps over the "
CANDIDATES = ["lazy dog.", "moon", "Привет мир 😀", "lazy"]


def lm_eval_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's _encode_pair (trailing spaces move to the continuation)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    return context_enc, whole[len(context_enc) :]


@ASYNC
@pytest.mark.parametrize("attention", ["ragged", "padded"])
async def test_equal_to_one_text_against_float64(
    engine_factory: Callable[..., Engine],
    tokenizer: Any,
    reference_logprobs: Callable[[list[int]], np.ndarray],
    attention: str,
) -> None:
    engine = engine_factory(attention=attention)
    trees = engine.get_model("default").backend.info.token_trees
    assert trees == (attention == "ragged")
    request = ContinuationRequest(context=CONTEXT, continuations=CANDIDATES, return_tokens=True)
    response = (await engine.score_continuations(request)).response
    for text, result in zip(CANDIDATES, response.results, strict=True):
        context_ids, own = lm_eval_pair(tokenizer, CONTEXT, text)
        assert response.context_tokens == len(context_ids)
        rows = reference_logprobs(context_ids + own)
        want = rows[np.arange(len(context_ids) - 1, len(context_ids) + len(own) - 1), own]
        assert result.num_tokens == len(own) and result.continuation == text
        assert result.sum_logprob == pytest.approx(want.sum(), rel=BATCH_INVARIANCE_REL, abs=1e-4)
        assert result.tokens is not None and [t.id for t in result.tokens] == own
        greedy = all(
            rows[len(context_ids) - 1 + j].argmax() == token for j, token in enumerate(own)
        )
        assert result.is_greedy == greedy
    assert response.usage.prompt_tokens == response.context_tokens + sum(
        r.num_tokens for r in response.results
    )


@ASYNC
@pytest.mark.parametrize("continuation", ["ick and more", "ick"])
async def test_a_continuation_merging_with_the_context_is_scored_whole(
    tiny_engine: Engine,
    tokenizer: Any,
    reference_logprobs: Callable[[list[int]], np.ndarray],
    continuation: str,
) -> None:
    """The context ends in "qu" and the continuation starts with "ick": together they
    tokenize as " quick", so splitting context + continuation after the context's tokens
    would drop "ick" (or leave nothing). The continuation is tokenized alone instead, and
    every character of it is scored after exactly the context's tokens."""
    context = "I like the qu"
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    assert whole[: len(context_ids)] != context_ids, "the tokenizer no longer merges these"
    own = tokenizer.encode(continuation, add_special_tokens=False)
    request = ContinuationRequest(context=context, continuations=[continuation])
    (result,) = (await tiny_engine.score_continuations(request)).response.results
    rows = reference_logprobs(context_ids + own)
    want = rows[np.arange(len(context_ids) - 1, len(context_ids) + len(own) - 1), own]
    assert result.num_tokens == len(own)
    assert result.sum_logprob == pytest.approx(want.sum(), rel=BATCH_INVARIANCE_REL, abs=1e-4)


@ASYNC
async def test_greedy_continuation_is_recognised(
    tiny_engine: Engine, tokenizer: Any, reference_logprobs: Callable[[list[int]], np.ndarray]
) -> None:
    """The model's own most likely next token, as text, is a greedy continuation."""
    found = 0
    for context in ("hello world", "the quick brown", "Grüße aus", "the model scores"):
        ids = tokenizer.encode(context, add_special_tokens=False)
        best = int(reference_logprobs([*ids, 0])[-1].argmax())
        text = tokenizer.decode([best])
        if lm_eval_pair(tokenizer, context, text)[1] != [best]:
            continue  # that token does not come back from its text: not testable here
        request = ContinuationRequest(context=context, continuations=[text, "zzzz qqq"])
        greedy, other = (await tiny_engine.score_continuations(request)).response.results
        assert greedy.is_greedy and not other.is_greedy
        found += 1
    assert found, "no context had a greedy token that round-trips"


@ASYNC
async def test_empty_context_is_the_bos_token(
    tiny_engine: Engine, tokenizer: Any, reference_logprobs: Callable[[list[int]], np.ndarray]
) -> None:
    request = ContinuationRequest(context="", continuations=["hello world"])
    response = (await tiny_engine.score_continuations(request)).response
    own = tokenizer.encode("hello world", add_special_tokens=False)
    rows = reference_logprobs([tokenizer.bos_token_id, *own])
    assert response.context_tokens == 1
    want = rows[np.arange(len(own)), own].sum()
    assert response.results[0].sum_logprob == pytest.approx(
        want, rel=BATCH_INVARIANCE_REL, abs=1e-4
    )


@ASYNC
async def test_rest_and_bad_input(client_factory: Callable[..., httpx.AsyncClient]) -> None:
    client = client_factory(max_texts_per_request=3, max_context=32)
    ok = await client.post(URL, json={"context": CONTEXT, "continuations": CANDIDATES[:2]})
    assert ok.status_code == 200, ok.text
    assert [r["continuation"] for r in ok.json()["results"]] == CANDIDATES[:2]
    assert "tokens" not in ok.json()["results"][0]
    cases = [
        ({"context": "a", "continuations": []}, 422, "continuations"),
        ({"context": "a", "continuations": ["b", ""]}, 422, "continuations[1]"),
        ({"context": "a", "continuations": ["b"] * 4}, 413, "continuations"),
        ({"context": "a", "continuations": ["b " * 40]}, 422, "continuations[0]"),
        ({"context": "b " * 40, "continuations": ["c"]}, 422, "context"),  # no room left
        ({"model": "nope", "context": "a", "continuations": ["b"]}, 404, "model"),
        ({"context": "a", "continuations": ["b"], "texts": ["x"]}, 422, "texts"),
    ]
    for body, status, param in cases:
        response = await client.post(URL, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["param"] == param, body


@ASYNC
async def test_many_continuations_beyond_the_context_fall_back_to_pairs(
    engine_factory: Callable[..., Engine], tiny_engine: Engine
) -> None:
    """A tree longer than the context would need a huge mask: each pair is its own window."""
    small = engine_factory(max_context=24)
    candidates = [f"{word} jumps over the lazy dog" for word in ("fox", "cat", "dog", "bird")]
    request = ContinuationRequest(context=CONTEXT, continuations=candidates)
    got = (await small.score_continuations(request)).response
    want = (await tiny_engine.score_continuations(request)).response
    assert got.usage.prompt_tokens > 24  # the whole tree would not fit
    for a, b in zip(got.results, want.results, strict=True):
        assert a.sum_logprob == pytest.approx(b.sum_logprob, rel=BATCH_INVARIANCE_REL, abs=1e-4)


@ASYNC
async def test_token_texts_join_to_the_continuation(tiny_engine: Engine) -> None:
    """A character split over byte-level tokens shows once, whole, on the token that
    completes it (its other pieces ""), never as U+FFFD: the texts join to what was sent."""
    continuations = [" 🚀🎉 Привет", " 日本語 text", " plain words"]
    request = ContinuationRequest(context="We say", continuations=continuations, return_tokens=True)
    response = (await tiny_engine.score_continuations(request)).response
    for sent, result in zip(continuations, response.results, strict=True):
        assert result.tokens is not None and len(result.tokens) == result.num_tokens
        texts = [t.text for t in result.tokens]
        assert "".join(texts) == sent and not any("\ufffd" in t for t in texts)


@ASYNC
async def test_prepend_bos_puts_the_bos_before_the_context(
    tiny_engine: Engine, tokenizer: Any, reference_logprobs: Callable[[list[int]], np.ndarray]
) -> None:
    """With prepend_bos the context starts with the model's BOS (lm-evaluation-harness's hf
    backend with a tokenizer that adds one); unset, this tokenizer adds none."""
    context, continuation = "The quick brown fox", " jumps over"
    context_ids, own = lm_eval_pair(tokenizer, context, continuation)
    rows = reference_logprobs([tokenizer.bos_token_id, *context_ids, *own])
    at = len(context_ids) + np.arange(len(own))
    want = rows[at, own].sum()
    asked = ContinuationRequest(context=context, continuations=[continuation], prepend_bos=True)
    response = (await tiny_engine.score_continuations(asked)).response
    assert response.context_tokens == len(context_ids) + 1
    assert response.results[0].sum_logprob == pytest.approx(
        want, rel=BATCH_INVARIANCE_REL, abs=1e-4
    )
    for prepend_bos in (None, False):
        request = ContinuationRequest(
            context=context, continuations=[continuation], prepend_bos=prepend_bos
        )
        plain = (await tiny_engine.score_continuations(request)).response
        assert plain.context_tokens == len(context_ids)
