"""The UTF-8 bytes each token of a text holds, for byte-level tokenizers.

Byte-level BPE tokenizers (GPT-2's alphabet: each character of a token's string stands
for one byte) can split one character across tokens, and their offset mappings then
report the whole character in every piece: how many of its bytes each piece holds is
lost. Bits per byte needs that count wherever the scored tokens start or stop inside a
character: a text's first (unscored) token, a truncation, a message boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte alphabet, reversed: printable Latin-1 bytes stand for themselves, the
    other bytes for the code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(code): b for b, code in chars.items()}


def token_byte_lengths(tokenizer: Any, ids: Sequence[int], text: str) -> list[int] | None:
    """UTF-8 bytes of ``text`` each token of ``ids`` holds, or None unless the tokens'
    bytes concatenate to exactly the text's (a byte-level tokenizer whose normalizer left
    the text as it was). Added tokens (chat markers) hold their content's bytes."""
    alphabet = _byte_of_char()
    added = tokenizer.added_tokens_decoder
    pieces: list[bytes] = []
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        if token_id in added:
            pieces.append(str(added[token_id].content).encode("utf-8"))
            continue
        try:
            pieces.append(bytes(alphabet[c] for c in token))
        except (KeyError, TypeError):  # not GPT-2's alphabet: not a byte-level tokenizer
            return None
    if b"".join(pieces) != text.encode("utf-8", errors="surrogatepass"):
        return None
    return [len(piece) for piece in pieces]
