"""What a byte-level tokenizer's tokens hold, byte by byte, for reference rates.

GPT-2's byte alphabet comes from transformers here, independently of the service, so
tests check the service's byte and character counts against a second implementation."""

from __future__ import annotations

import itertools
from typing import Any

from transformers.convert_slow_tokenizer import bytes_to_unicode

BYTE_OF = {char: byte for byte, char in bytes_to_unicode().items()}


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """The bytes each token of ``ids`` holds (ordinary, not added, tokens)."""
    return [bytes(BYTE_OF[c] for c in t) for t in tokenizer.convert_ids_to_tokens(ids)]


def scored_counts(text: str, pieces: list[bytes], scored: range) -> tuple[int, int]:
    """(UTF-8 bytes, characters) the tokens in ``scored`` hold: a character counts when
    the token holding its last byte is scored."""
    assert b"".join(pieces) == text.encode()
    ends = list(itertools.accumulate(len(p) for p in pieces))
    starts = [0, *ends[:-1]]
    first, last = starts[scored.start], ends[scored.stop - 1]
    char_ends = itertools.accumulate(len(c.encode()) for c in text)
    chars = sum(1 for end in char_ends if first < end <= last)
    return sum(len(pieces[j]) for j in scored), chars
