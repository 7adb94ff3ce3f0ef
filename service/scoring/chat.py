"""Where each message's content lies in a conversation rendered by the model's chat template.

The template (from the model's files only; transformers renders it in a sandboxed Jinja
environment) is treated as a black box. Contents are found by rendering the conversation
with them replaced by sentinels: all at once (two renderings, whatever the conversation's
length) where that reproduces the real rendering, else one message at a time, for
templates whose text depends on the content (a reasoning block added when an answer has
none). The end-of-turn text of a message is what the template adds after its content when
the conversation ends with that message (trailing whitespace excluded).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

Message = dict[str, str]
Renderer = Callable[[list[Message]], str]


class ChatTemplateError(ValueError):
    """The template cannot be rendered for this conversation, or hides message content."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class MessageSpan:
    """Character spans in the rendered text: content ``[start, end)`` and the end-of-turn
    text ``[end, turn_end)`` that follows it."""

    start: int
    end: int
    turn_end: int


@dataclass(frozen=True)
class RenderedChat:
    text: str
    spans: list[MessageSpan]


# The span of a message placed nowhere: it owns no token (none starts before 0), and has
# no end of turn.
_NOWHERE = MessageSpan(0, 0, 0)


def _sentinel(index: int, nonce: str) -> str:
    # Private-use code points and a fresh nonce per rendering: content cannot contain it.
    return f"\ue000lmscore-{nonce}-{index}\ue001"


def render_with_spans(
    messages: Sequence[Message],
    render: Renderer,
    required: Collection[int] | None = None,
) -> RenderedChat:
    """Render ``messages`` and locate each message's content and end-of-turn text.

    ``required``: the messages whose content must be found (default: all). Another whose
    content the template drops, moves or rewrites (Mistral's system prompt) gets an empty
    span and owns no text."""
    messages = [dict(m) for m in messages]
    need = set(range(len(messages))) if required is None else set(required)
    full = _render(render, messages, None)
    nonce = secrets.token_hex(8)
    spans = _locate_at_once(messages, render, full, nonce)
    if spans is None:
        spans = _locate_one_by_one(messages, render, full, nonce, need)
    spans = [
        replace(span, turn_end=_turn_end(render, messages[: i + 1], full, span, i))
        if span is not _NOWHERE
        else span
        for i, span in enumerate(spans)
    ]
    return RenderedChat(full, spans)


def _locate_at_once(
    messages: list[Message], render: Renderer, full: str, nonce: str
) -> list[MessageSpan] | None:
    """Every content's span from one rendering with each content replaced by its sentinel:
    the template text between the sentinels, matched piece by piece against the real
    rendering. None where that does not reproduce it exactly."""
    sentinels = [_sentinel(i, nonce) for i in range(len(messages))]
    try:
        probe = render([{**m, "content": s} for m, s in zip(messages, sentinels, strict=True)])
    except Exception:  # the one-by-one probes name the message the template refuses
        return None
    pieces, cursor = [], 0
    for sentinel in sentinels:
        at = probe.find(sentinel, cursor)
        if at < 0:
            return None
        pieces.append(probe[cursor:at])
        cursor = at + len(sentinel)
    pieces.append(probe[cursor:])
    spans, position = [], 0
    for i, message in enumerate(messages):
        if not full.startswith(pieces[i], position):
            return None
        position += len(pieces[i])
        length = _content_length(full, position, message["content"], pieces[i + 1])
        if length is None:
            return None
        spans.append(MessageSpan(position, position + length, position + length))
        position += length
    return spans if full[position:] == pieces[-1] else None


def _locate_one_by_one(
    messages: list[Message], render: Renderer, full: str, nonce: str, need: Collection[int]
) -> list[MessageSpan]:
    """Each content's span from a rendering with only that content replaced; a message
    not in ``need`` that cannot be placed (or overlaps another) gets an empty span."""
    spans: list[MessageSpan] = []
    for i in range(len(messages)):
        span = _locate(messages, i, render, full, nonce, required=i in need)
        if span is not None and any(span.start < s.end and s.start < span.end for s in spans):
            span = None
        if span is None:
            if i in need:
                raise ChatTemplateError(
                    "the chat template does not render this message's content verbatim", i
                )
            span = _NOWHERE
        spans.append(span)
    return spans


def _locate(
    messages: list[Message], i: int, render: Renderer, full: str, nonce: str, required: bool
) -> MessageSpan | None:
    sentinel = _sentinel(i, nonce)
    probe = [*messages[:i], {**messages[i], "content": sentinel}, *messages[i + 1 :]]
    try:
        probe_text = _render(render, probe, i)
    except ChatTemplateError:
        if required:
            raise
        return None
    at = probe_text.find(sentinel)
    if at < 0:
        return None
    content, after = messages[i]["content"], probe_text[at + len(sentinel) :]
    if full.startswith(probe_text[:at]):
        length = _content_length(full, at, content, after)
        if length is not None:
            return MessageSpan(at, at + length, at + length)
    # The template wrote something else before the content (Qwen3 adds an empty reasoning
    # block to an answer that has none): place the content before the same text after it.
    end = len(full) - len(after)
    if not full.endswith(after):
        return None
    for form in _forms(content):
        if full[:end].endswith(form):
            return MessageSpan(end - len(form), end, end)
    return None


def _render(render: Renderer, messages: list[Message], index: int | None) -> str:
    try:
        return render(messages)
    except Exception as exc:  # template errors are the caller's conversation's fault
        raise ChatTemplateError(
            f"the chat template rejected the conversation: {exc}", index
        ) from exc


def _forms(content: str) -> list[str]:
    # Some templates trim message content (Llama 3, Gemma), or trim a system prompt joined
    # to it (Mistral: only the joined text's far ends go); accept trimmed forms, nothing looser.
    return list(dict.fromkeys((content, content.strip(), content.rstrip(), content.lstrip())))


def _content_length(full: str, start: int, content: str, after: str) -> int | None:
    """The length of the form of ``content`` rendered at ``start``: one followed by the
    template's own text ``after`` it where several fit (Llama 2 writes ``content.strip()``
    and a space: an answer's trailing space is not the template's)."""
    fitting = [form for form in _forms(content) if full.startswith(form, start)]
    for form in fitting:
        if full.startswith(after, start + len(form)):
            return len(form)
    return len(fitting[0]) if fitting else None


def _turn_end(
    render: Renderer, prefix: list[Message], full: str, span: MessageSpan, index: int
) -> int:
    """Where the message's end-of-turn text ends: what the template adds after its content
    when the conversation ends with it, found at the content's end in ``full``."""
    rendered_prefix = _render(render, prefix, index)
    if full.startswith(rendered_prefix) and len(rendered_prefix) >= span.end:
        return span.end + len(rendered_prefix[span.end :].rstrip())
    # The template renders a last message otherwise (Qwen3 gives the last answer a
    # reasoning block): take the text after that message's content in the prefix's
    # rendering, where the full rendering has the same text after the content.
    content = full[span.start : span.end]
    at = rendered_prefix.rfind(content) if content else -1
    if at < 0:
        return span.end
    end_of_turn = rendered_prefix[at + len(content) :].rstrip()
    return span.end + len(end_of_turn) if full.startswith(end_of_turn, span.end) else span.end
