"""Character offsets of tokens that tile their text exactly.

Tokenizers' offset mappings can overlap (a character split across byte-level tokens
is reported in each piece) or leave gaps (stripped spaces). Tiled offsets give every
character to exactly one token, so token texts concatenate back to the text and
per-character rates are well defined. A character split across tokens belongs to the token
that completes it (holds its last byte), as incremental detokenizers emit it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence


def tile_offsets(offsets: Sequence[tuple[int, int]], text_length: int) -> list[tuple[int, int]]:
    """Make ``offsets`` contiguous and covering ``[0, text_length)``.

    Each token starts where the previous one ended; a token's end never goes back;
    the last token ends at ``text_length``. A character reported in several tokens goes
    to the last of them.
    """
    next_start: list[int | None] = []  # where the next token with text starts
    upcoming: int | None = None
    for start, end in reversed(offsets):
        next_start.append(upcoming)
        if end > start:
            upcoming = start
    next_start.reverse()
    tiled: list[tuple[int, int]] = []
    cursor = 0
    for (_, end), following in zip(offsets, next_start, strict=True):
        if following is not None and following < end:  # shared characters go on
            end = following
        end = min(max(end, cursor), text_length)
        tiled.append((cursor, end))
        cursor = end
    if tiled:
        start, _ = tiled[-1]
        tiled[-1] = (start, text_length)
    return tiled


def utf8_length(text: str) -> int:
    """Number of UTF-8 bytes of ``text``."""
    return len(text.encode("utf-8", errors="surrogatepass"))


def shares_a_character(offsets: Sequence[tuple[int, int]]) -> bool:
    """Whether a token's raw offsets overlap an earlier token's (one character split
    across tokens). Zero-width offsets (special tokens) overlap nothing."""
    reached = 0
    for start, end in offsets:
        if end > start:
            if start < reached:
                return True
            reached = max(reached, end)
    return False


def offsets_from_bytes(text: str, byte_lengths: Sequence[int]) -> list[tuple[int, int]]:
    """Tiled character offsets from the UTF-8 bytes each token holds (they add up to the
    text's): a character goes to the token holding its last byte."""
    char_ends = list(itertools.accumulate(utf8_length(c) for c in text))  # bytes, exclusive
    tiled: list[tuple[int, int]] = []
    cursor = 0
    for byte_end in itertools.accumulate(byte_lengths):
        end = bisect.bisect_right(char_ends, byte_end)
        tiled.append((cursor, end))
        cursor = end
    return tiled
