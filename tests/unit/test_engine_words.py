"""Word scores through the engine and REST, against float64 on the tiny model."""

from __future__ import annotations

import itertools
import math
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from tolerances import BATCH_INVARIANCE_REL

from service.backends.hf import beginning_of_word_mask
from service.engine import Engine
from service.schemas import TextScoreRequest

ASYNC = pytest.mark.asyncio(loop_scope="session")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München! hello world",
    "Привет мир, как дела? 😀 日本語",
]


@torch.inference_mode()
def reference_rows(model: Any, ids: list[int]) -> np.ndarray:
    """float64 log-softmax rows [len(ids), V]: row p is the distribution after ids[:p+1]."""
    logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


@ASYNC
async def test_words_match_float64(
    tiny_engine: Engine, tokenizer: Any, reference_model: Any
) -> None:
    request = TextScoreRequest(texts=TEXTS, words=True, return_tokens=True)
    response = (await tiny_engine.score_text(request)).response
    mask = beginning_of_word_mask(tokenizer, len(tokenizer)).numpy()
    for text, result in zip(TEXTS, response.results, strict=True):
        assert result.words is not None and result.tokens is not None
        assert "".join(w.text for w in result.words) == text
        bounds = [(w.start, w.end) for w in result.words]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        ids = [t.id for t in result.tokens]
        rows = reference_rows(reference_model, ids)
        log_b = np.logaddexp.reduce(rows[:, mask], axis=1)  # after token p: B at p + 1
        token_lp = [None] + [rows[p - 1, ids[p]] for p in range(1, len(ids))]
        first = 0
        for k, word in enumerate(result.words):
            span = range(first, first + word.num_tokens)
            first += word.num_tokens
            if 0 in span:
                assert word.logprob is None
                continue
            plain = math.fsum(token_lp[p] for p in span)  # type: ignore[misc]
            assert word.logprob == pytest.approx(plain, rel=BATCH_INVARIANCE_REL, abs=1e-4)
            next_space = k + 1 == len(result.words) or result.words[k + 1].text[0].isspace()
            if not (word.text[0].isspace() and next_space):
                assert word.logprob_corrected is None
                continue
            before = log_b[span[0] - 1]
            after = log_b[span[-1]]
            want = plain + after - before
            assert word.logprob_corrected == pytest.approx(want, rel=BATCH_INVARIANCE_REL, abs=1e-4)
            assert word.surprisal_bits == pytest.approx(-want / math.log(2), rel=1e-3, abs=1e-4)


@ASYNC
async def test_first_word_after_bos_uses_no_denominator(
    tiny_engine: Engine, tokenizer: Any, reference_model: Any
) -> None:
    """After a BOS the first word starts a word for sure (B = 1 before it): its corrected
    logprob is its plain one plus log B after it, with nothing divided out."""
    text = "hello world"
    request = TextScoreRequest(texts=[text], words=True, prepend_bos=True)
    (result,) = (await tiny_engine.score_text(request)).response.results
    assert result.words is not None
    first = result.words[0]
    assert first.text == "hello" and first.logprob is not None
    ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]
    rows = reference_rows(reference_model, ids)
    mask = beginning_of_word_mask(tokenizer, len(tokenizer)).numpy()
    n = first.num_tokens  # the word's tokens are ids[1 : 1 + n]
    plain = math.fsum(rows[p - 1, ids[p]] for p in range(1, 1 + n))
    after = float(np.logaddexp.reduce(rows[n, mask]))
    assert first.logprob == pytest.approx(plain, rel=BATCH_INVARIANCE_REL, abs=1e-4)
    assert first.logprob_corrected == pytest.approx(
        plain + after, rel=BATCH_INVARIANCE_REL, abs=1e-4
    )


@ASYNC
async def test_words_over_rest_and_refused_for_chats(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/score/text", json={"texts": TEXTS[:1], "words": True})).json()
    words = body["results"][0]["words"]
    assert [w["text"] for w in words][:3] == ["The", " quick", " brown"]
    plain = (await client.post("/v1/score/text", json={"texts": TEXTS[:1]})).json()
    assert "words" not in plain["results"][0]
    chat = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    refused = await client.post("/v1/score/chat", json={"conversations": chat, "words": True})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "words"


def test_beginning_of_word_tokens(tokenizer: Any) -> None:
    mask = beginning_of_word_mask(tokenizer, len(tokenizer) + 3)  # a padded vocabulary
    assert mask.shape == (len(tokenizer) + 3,) and not mask[len(tokenizer) :].any()
    (space_the,) = tokenizer.encode(" the", add_special_tokens=False)
    (the,) = tokenizer.encode("the", add_special_tokens=False)
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]
    assert mask[space_the] and mask[newline] and mask[tokenizer.eos_token_id]
    assert not mask[the]
