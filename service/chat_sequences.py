"""A conversation as a scored sequence: rendered by the model's chat template, tokenized
with message content as plain text, each token owned by a message (or the template)."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Collection
from typing import Any

from service.errors import InvalidRequest, Timeout
from service.scoring.chat import ChatTemplateError, RenderedChat, render_with_spans
from service.sequences import Encoded, ScoredSequence, encoded_from_offsets


def chat_sequence(
    tokenizer: Any,
    messages: list[dict[str, str]],
    score_roles: Collection[str],
    include_end_of_turn: bool,
) -> ScoredSequence:
    """A conversation rendered by the model's chat template, scoring the content tokens of
    messages whose role is in ``score_roles`` (and their end-of-turn tokens if asked)."""

    def render(msgs: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(msgs, tokenize=False))

    # Only scored messages must be found: a template may drop or move another's content
    # (Mistral v0.3 puts the system prompt in the last user turn, or leaves it out).
    scored_messages = [i for i, m in enumerate(messages) if m["role"] in score_roles]
    chat: RenderedChat = render_with_spans(messages, render, scored_messages)
    encoded = _encode_rendered_chat(tokenizer, chat)
    owner: list[int | None] = []
    scored: list[bool] = []
    for start, end in encoded.offsets:
        index, in_content = _owner(chat, start, end)
        owner.append(index)
        counts = index is not None and messages[index]["role"] in score_roles
        scored.append(counts and (in_content or include_end_of_turn) and len(owner) > 1)
    return ScoredSequence(
        chat.text,
        encoded.ids,
        encoded.offsets,
        scored,
        None,
        owner,
        token_bytes=encoded.token_bytes,
    )


def _encode_rendered_chat(tokenizer: Any, chat: RenderedChat) -> Encoded:
    """The rendering's tokens, with message content as plain text: a special token's text
    written in a message (an answer quoting ``<|im_end|>``) stays that text, not the control
    token, so content cannot end a turn or open a forged one. Where content holds no such
    text (the usual case) these are the whole rendering's tokens."""
    text = chat.text
    ids, offsets = _tokenize(tokenizer, text)
    control = _control_ids(tokenizer)
    forged = {
        j
        for j, token in enumerate(ids)
        if token in control and _in_content(chat, _marker_span(tokenizer, text, token, offsets[j]))
    }
    if forged:
        ids, offsets = _as_plain_text(tokenizer, text, ids, offsets, control, forged)
    return encoded_from_offsets(tokenizer, text, ids, offsets)


def _as_plain_text(
    tokenizer: Any,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
    control: frozenset[int],
    forged: set[int],
) -> tuple[list[int], list[tuple[int, int]]]:
    """The tokens with each stretch between two of the template's own control tokens that
    holds a forged one tokenized again as one plain-text piece (the rest unchanged)."""
    template = [j for j, token in enumerate(ids) if token in control and j not in forged]
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    previous = -1  # the template's control token before the current stretch
    for j in [*template, len(ids)]:
        stretch = range(previous + 1, j)
        if forged.intersection(stretch):
            a = offsets[previous][1] if previous >= 0 else 0
            b = offsets[j][0] if j < len(ids) else len(text)
            piece_ids, piece_offsets = _tokenize(_literal(tokenizer), text[a:b], literal=True)
            out_ids += piece_ids
            out_offsets += [(a + s, a + e) for s, e in piece_offsets]
        else:
            out_ids += [ids[k] for k in stretch]
            out_offsets += [offsets[k] for k in stretch]
        if j < len(ids):
            out_ids.append(ids[j])
            out_offsets.append(offsets[j])
        previous = j
    return out_ids, out_offsets


def _in_content(chat: RenderedChat, span: tuple[int, int]) -> bool:
    return any(span[0] < m.end and m.start < span[1] for m in chat.spans)


def _marker_span(tokenizer: Any, text: str, token: int, offset: tuple[int, int]) -> tuple[int, int]:
    """Where a control token's own text lies: its offsets also cover the whitespace a token
    defined with lstrip/rstrip absorbs (Phi-3's ``<|user|>``), which may be content's."""
    marker = tokenizer.convert_ids_to_tokens(token)
    found = text.find(marker, *offset)
    return (found, found + len(marker)) if found >= 0 else offset


def _tokenize(
    tokenizer: Any, text: str, *, literal: bool = False
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and raw character offsets; ``literal``: special tokens' text is plain text."""
    options = {"split_special_tokens": True} if literal else {}
    enc = tokenizer([text], add_special_tokens=False, return_offsets_mapping=True, **options)
    return list(enc["input_ids"][0]), [tuple(o) for o in enc["offset_mapping"][0]]


def _control_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's special tokens, declared or added as special, but the unknown
    token (which stands for text, not markup)."""
    added = tokenizer.added_tokens_decoder.items()
    special = frozenset(tokenizer.all_special_ids) | {i for i, t in added if t.special}
    return special - {tokenizer.unk_token_id}


@functools.lru_cache(maxsize=16)
def _literal(tokenizer: Any) -> Any:
    """A private copy of ``tokenizer`` for plain-text pieces: asking for split special
    tokens flips a flag on a fast tokenizer's shared Rust object, which another thread
    decoding with it at that moment would trip over ("Already borrowed")."""
    return copy.deepcopy(tokenizer)


def chat_sequences(
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    score_roles: Collection[str],
    include_end_of_turn: bool,
    deadline: float | None = None,
) -> list[ScoredSequence]:
    """Every conversation as a sequence; a template failure is a 422 naming it. Past
    ``deadline`` (``time.monotonic()``) it stops between conversations: the request has
    timed out, and the model's preparation thread is wanted by the requests after it."""
    seqs = []
    for i, messages in enumerate(conversations):
        if deadline is not None and time.monotonic() > deadline:
            raise Timeout("the request ran out of time while its conversations were rendered")
        try:
            seqs.append(chat_sequence(tokenizer, messages, score_roles, include_end_of_turn))
        except ChatTemplateError as exc:
            raise chat_error(exc, i) from exc
    return seqs


def _owner(chat: RenderedChat, start: int, end: int) -> tuple[int | None, bool]:
    """(message index, in its content) for the token at characters ``[start, end)``.

    A token holding any of a message's content is that content's: tokenizers join the
    space a template puts before a message to its first word (``[/INST] Hello`` gives
    ``▁Hello`` in Llama 2 and Mistral templates), and that token is the message's first
    word, whose logprob counts. Otherwise a token starting in a message's end-of-turn text
    belongs to that message, outside its content."""
    stop = max(end, start + 1)  # a zero-width (special) token at ``start``
    for index, span in enumerate(chat.spans):
        if start < span.end and span.start < stop:
            return index, True
    for index, span in enumerate(chat.spans):
        if span.end <= start < span.turn_end:
            return index, False
    return None, False


def chat_error(exc: ChatTemplateError, conversation: int) -> InvalidRequest:
    """The InvalidRequest for a template failure, naming the conversation or message."""
    param = f"conversations[{conversation}]"
    if exc.index is not None:
        param += f"[{exc.index}]"
    return InvalidRequest(str(exc), param=param)
