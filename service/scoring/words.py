"""Word-level scores: tokens grouped into words, and a word's log-probability.

Words: a text is cut into segments that tile it exactly, each its leading whitespace plus
a run of non-space characters (punctuation stays with its word, as in reading-time
corpora); a run of CJK ideographs or kana is cut into single characters, which is how those
scripts are read word by word. A cut that falls inside a token is dropped, so every word is
a whole number of tokens, and the words still tile the text.

A word's probability (Pimentel & Meister, 2024, "How to Compute the Probability of a
Word"): with a tokenizer whose tokens carry a word's leading space ("beginning of word",
BOW), summing the word's token logprobs is not log p(word): those tokens could also be the
start of a longer word. The corrected estimate multiplies by the probability that a new
word (or the end of the text) follows, and divides by the same at the word's own start:

    log p(w | c) = sum log p(tokens of w | c) + log B(after w) - log B(before w)

with ``B(position) = sum of p(v)`` over the BOW tokens ``v`` (and end of text); ``log B``
at the start of the text is 0. It applies where words are separated by whitespace (or
the text begins or ends); elsewhere (a cut between CJK characters) it is not defined, and
the corrected value is None. All logprobs are natural logs (nats).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_SEGMENT = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)|\s+")


@dataclass(frozen=True)
class Word:
    """Characters ``[start, end)`` of the text and tokens ``[first_token, end_token)``;
    ``after_space``: the word begins with whitespace or at the start of the text."""

    start: int
    end: int
    first_token: int
    end_token: int
    after_space: bool


def segments(text: str) -> list[tuple[int, int]]:
    """Character spans that tile ``text``: leading whitespace + a word (trailing
    whitespace at the end of the text goes to the last word)."""
    spans = [m.span() for m in _SEGMENT.finditer(text)]
    if len(spans) > 1 and not text[spans[-1][0] : spans[-1][1]].strip():
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans


def group_tokens(text: str, offsets: Sequence[tuple[int, int]]) -> list[Word]:
    """Words of ``text`` whose tokens have the tiled character ``offsets``."""
    if not offsets:
        return []
    token_starts = {start for start, _ in offsets}
    merged: list[tuple[int, int]] = []
    for start, end in segments(text):
        if merged and start not in token_starts:
            merged[-1] = (merged[-1][0], end)  # the cut is inside a token
        else:
            merged.append((start, end))
    starts = [start for start, _ in merged]
    # Token t belongs to the word its start falls in (a zero-width token at the very end
    # of the text to the last word).
    owner = [max(0, bisect.bisect_right(starts, start) - 1) for start, _ in offsets]
    words: list[Word] = []
    for index, (start, end) in enumerate(merged):
        first = bisect.bisect_left(owner, index)
        last = bisect.bisect_right(owner, index)
        after_space = start == 0 or text[start].isspace()
        words.append(Word(start, end, first, last, after_space))
    return words


@dataclass(frozen=True)
class WordLogprob:
    """A word's plain logprob (sum over its tokens) and the BOW-corrected one (nats);
    None where a token has no context or the correction is not defined."""

    plain: float | None
    corrected: float | None


def word_logprobs(
    words: Sequence[Word],
    logprobs: npt.NDArray[np.floating],
    bow: npt.NDArray[np.floating] | None,
    shift: int,
) -> list[WordLogprob]:
    """Logprobs of ``words`` from per-position token ``logprobs`` (NaN without context)
    and ``log B`` per position (``bow``, one longer than the tokens: the last entry is
    after the last token). ``shift`` is the position of token 0 (1 after a BOS)."""
    out: list[WordLogprob] = []
    for k, word in enumerate(words):
        values = logprobs[word.first_token + shift : word.end_token + shift]
        if len(values) == 0 or np.isnan(values).any():
            out.append(WordLogprob(None, None))
            continue
        plain = math.fsum(float(v) for v in values)
        next_after_space = k + 1 == len(words) or words[k + 1].after_space
        if bow is None or not (word.after_space and next_after_space):
            out.append(WordLogprob(plain, None))
            continue
        before = 0.0 if word.first_token == 0 else float(bow[word.first_token + shift])
        after = float(bow[word.end_token + shift])
        out.append(WordLogprob(plain, plain + after - before))
    return out
