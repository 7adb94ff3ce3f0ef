"""The text a token adds, as a reader of the token stream sees it.

Byte-level BPE and SentencePiece tokens may end inside a multi-byte character, and
SentencePiece decoders drop a word-initial space when a token is decoded alone; these
functions give each token the text it adds in context, as incremental detokenizers
(vLLM's among them) do.
"""

from __future__ import annotations

from typing import Any


def token_pieces(tokenizer: Any, ids: list[int], context: int = 6) -> list[str]:
    """The text each token adds after the ones before it (decoding a few tokens of
    context, as incremental detokenizers do). A token that ends inside a multi-byte
    character adds nothing; the token completing the character adds all of it."""
    pieces: list[str] = []
    pending_from = 0  # first token whose text is not emitted yet
    for i in range(len(ids)):
        start = max(0, pending_from - context)
        before = str(tokenizer.decode(ids[start:pending_from], clean_up_tokenization_spaces=False))
        after = str(tokenizer.decode(ids[start : i + 1], clean_up_tokenization_spaces=False))
        if after.endswith("\ufffd") and i + 1 < len(ids):
            pieces.append("")
            continue
        pieces.append(after[len(before) :] if after.startswith(before) else after)
        pending_from = i + 1
    return pieces


def next_piece(tokenizer: Any, ids: list[int], token: int, context: int = 6) -> str:
    """The text ``token`` adds after ``ids``."""
    tail = ids[-context:]
    before = str(tokenizer.decode(tail, clean_up_tokenization_spaces=False))
    after = str(tokenizer.decode([*tail, token], clean_up_tokenization_spaces=False))
    if after.startswith(before):
        return after[len(before) :]
    # ``ids`` end inside a character that ``token`` completes: their text already shows it
    # as U+FFFD, so the piece is what follows the text before that character.
    stem = before.rstrip("\ufffd")
    return after[len(stem) :] if after.startswith(stem) else after


def shown_text(piece: str) -> str:
    """What a generated token's ``piece`` adds to the output text: nothing while it ends
    inside a multi-byte character (decoded as U+FFFD). Incremental detokenizers (vLLM's,
    and the tokenizers library's ``DecodeStream``) hold such a character back until a
    later token completes it; generation here ends after one token, so none does."""
    return "" if piece.endswith("\ufffd") else piece


def lone_token_text(tokenizer: Any, token_id: int) -> str:
    """One token's text on its own, with the leading spaces its piece holds. SentencePiece
    decoders with a dummy prefix (Llama 2, Mistral) drop the space of a word-initial "▁"
    that starts the decoded text, though the token adds that space after any text; it is
    put back, as vLLM does."""
    text = str(tokenizer.decode([token_id]))
    raw = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(raw, str) or not raw.startswith("▁"):
        return text
    missing = (len(raw) - len(raw.lstrip("▁"))) - (len(text) - len(text.lstrip(" ")))
    return " " * missing + text if missing > 0 else text


def completed_piece(tokenizer: Any, context: list[int], token: int, reach: int = 4) -> str:
    """The text of a ``token`` whose own decoding ends inside a character, after
    ``context``, as vLLM corrects it: "" while the character stays incomplete; else all
    the text since the last context token that ends on a whole character (that token's
    successors showed "", so the completing token shows the whole character)."""

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, clean_up_tokenization_spaces=False))

    for n in range(1, min(len(context), reach) + 1):
        tail = context[-n:]
        full = decode([*tail, token])
        if full.endswith("\ufffd"):
            continue
        clean = len(tail)
        while clean > 0 and decode([tail[clean - 1]]).endswith("\ufffd"):
            clean -= 1
        prefix = decode(tail[:clean])
        if full.startswith(prefix):
            return full[len(prefix) :]
        # A normalizing decoder may spell the prefix differently inside the longer text.
        pairs = enumerate(zip(prefix, full, strict=False))
        common = next((i for i, (a, b) in pairs if a != b), min(len(prefix), len(full)))
        return full[common:]
    return ""
