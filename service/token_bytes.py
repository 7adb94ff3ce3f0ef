"""The UTF-8 bytes each token of a text holds, for byte-level and byte-fallback tokenizers.

Byte-level BPE tokenizers (GPT-2's alphabet: each character of a token's string stands
for one byte) and SentencePiece-style tokenizers with byte fallback (``<0xE6>`` tokens for
characters outside the vocabulary, ``▁`` for a space) can split one character across tokens,
and their offset mappings then report the whole character in every piece: how many of its
bytes each piece holds is lost. Bits per byte needs that count wherever the scored tokens
start or stop inside a character: a text's first (unscored) token, a truncation, a message
boundary.
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


def _byte_level(token: str) -> bytes:
    """A GPT-2 byte-level token's bytes (KeyError outside its alphabet)."""
    alphabet = _byte_of_char()
    return bytes(alphabet[c] for c in token)


def _sentencepiece(token: str) -> bytes:
    """A SentencePiece token's bytes: ``<0xNN>`` is byte NN, ``▁`` a space."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("\u2581", " ").encode("utf-8")


def token_byte_lengths(tokenizer: Any, ids: Sequence[int], text: str) -> list[int] | None:
    """UTF-8 bytes of ``text`` each token of ``ids`` holds, or None unless the tokens'
    bytes, read as byte-level or as SentencePiece tokens, concatenate to exactly the
    text's (a normalizer that changed the text defeats both). A space the tokenizer put
    before the text (SentencePiece's dummy prefix) belongs to no byte of it. Added tokens
    (chat markers) hold their content's bytes."""
    target = text.encode("utf-8", errors="surrogatepass")
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    added = tokenizer.added_tokens_decoder
    for token_bytes in (_byte_level, _sentencepiece):
        try:
            pieces = [
                str(added[i].content).encode("utf-8") if i in added else token_bytes(token)
                for i, token in zip(ids, tokens, strict=True)
            ]
        except (KeyError, TypeError):  # not this alphabet
            continue
        lengths = [len(piece) for piece in pieces]
        joined = b"".join(pieces)
        if joined == target:
            return lengths
        if joined == b" " + target and pieces[0].startswith(b" "):  # a dummy prefix
            lengths[0] -= 1
            return lengths
    return None
