"""Bits per byte and per character where a character is split across byte-level tokens
and the scored tokens start or stop inside it: the first (unscored) token, a truncation.

Bytes are counted exactly from each token's own bytes (GPT-2's byte alphabet, taken here
from transformers, independently of the service); a character counts when the token
holding its last byte is scored."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from byte_tokens import scored_counts, token_bytes

from service.engine import Engine
from service.schemas import TextResult, TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

LN2 = math.log(2.0)
SPLIT_TEXTS = [
    "\U0001d538",  # one character, several byte tokens: nothing but fragments is scored
    "\U0001d538\U0001d539",
    "昨天晚上，我们在山脚下",
    "日本語の文章です",
    "Ωμέγα ñandú 😎 ℝ²",
]


def assert_rates(result: TextResult, nbytes: int, chars: int) -> None:
    assert result.num_scored_tokens > 0 and nbytes > 0
    bits = -result.sum_logprob / LN2
    assert result.bits_per_byte == pytest.approx(bits / nbytes, rel=1e-12)
    if chars:
        assert result.bits_per_char == pytest.approx(bits / chars, rel=1e-12)


@pytest.mark.parametrize("prepend_bos", [False, True])
async def test_a_split_first_character_counts_only_the_scored_bytes(
    tiny_engine: Engine, tokenizer: Any, prepend_bos: bool
) -> None:
    request = TextScoreRequest(texts=SPLIT_TEXTS, prepend_bos=prepend_bos)
    response = (await tiny_engine.score_text(request)).response
    split_first = 0
    for text, result in zip(SPLIT_TEXTS, response.results, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = token_bytes(tokenizer, ids)
        split_first += len(pieces[0]) < len(text[0].encode())
        scored = range(0 if prepend_bos else 1, len(ids))
        assert result.num_scored_tokens == len(scored)
        assert_rates(result, *scored_counts(text, pieces, scored))
    assert split_first >= 2, "no text starts with a split character: the check did not run"


async def test_a_single_split_character_has_rates(tiny_engine: Engine) -> None:
    """Tokens scored means rates reported, even when no whole character is scored."""
    request = TextScoreRequest(texts=["\U0001d538"])
    (result,) = (await tiny_engine.score_text(request)).response.results
    assert result.num_scored_tokens > 0
    assert result.bits_per_byte is not None and result.bits_per_char is not None


async def test_truncation_inside_a_character_counts_only_the_kept_bytes(
    tiny_engine: Engine, tokenizer: Any
) -> None:
    context = tiny_engine.registry.get("default").context
    cut_inside = 0
    for filler in range(55, 64):
        text = "a " * filler + "\U0001d538\U0001d539昨天晚上" * 4
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > context
        pieces = token_bytes(tokenizer, ids)
        kept = pieces[:context]
        ends = set(itertools.accumulate(len(c.encode()) for c in text))
        cut_inside += sum(len(p) for p in kept) not in ends
        request = TextScoreRequest(texts=[text], overflow="truncate")
        (result,) = (await tiny_engine.score_text(request)).response.results
        assert result.truncated and result.num_tokens == context
        assert_rates(result, *scored_counts(text, pieces, range(1, context)))
    assert cut_inside > 0, "no truncation fell inside a character: the check did not run"
