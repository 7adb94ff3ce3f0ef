"""Character offsets of tokens that tile their text exactly.

Tokenizers' offset mappings can overlap (a character split across byte-level tokens
is reported in both) or leave gaps (stripped spaces). Tiled offsets give every character
to exactly one token, so token texts concatenate back to the text and per-character
rates are well defined.
"""

from __future__ import annotations

from collections.abc import Sequence


def tile_offsets(offsets: Sequence[tuple[int, int]], text_length: int) -> list[tuple[int, int]]:
    """Make ``offsets`` contiguous and covering ``[0, text_length)``.

    Each token starts where the previous one ended; a token's end never goes back;
    the last token ends at ``text_length``. A character reported in several tokens goes
    to the first of them.
    """
    tiled: list[tuple[int, int]] = []
    cursor = 0
    for _, end in offsets:
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
