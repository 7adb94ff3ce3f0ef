"""Where each message's content lies in a conversation rendered by the model's chat template.

The template (from the model's files only; transformers renders it in a sandboxed Jinja
environment) is treated as a black box: a message's content start is found by rendering
the conversation with that content replaced by a sentinel, and checked against the real
rendering. The end-of-turn text of a message is what the template adds after its content
when the conversation ends with that message (trailing whitespace excluded).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def _sentinel(index: int, nonce: str) -> str:
    # Private-use code points and a fresh nonce per rendering: content cannot contain it.
    return f"\ue000lmscore-{nonce}-{index}\ue001"


def render_with_spans(messages: Sequence[Message], render: Renderer) -> RenderedChat:
    """Render ``messages`` and locate each message's content and end-of-turn text."""
    messages = [dict(m) for m in messages]
    full = _render(render, messages, None)
    nonce = secrets.token_hex(8)
    spans: list[MessageSpan] = []
    cursor = 0
    for i, message in enumerate(messages):
        sentinel = _sentinel(i, nonce)
        probe = [*messages[:i], {**message, "content": sentinel}, *messages[i + 1 :]]
        probe_text = _render(render, probe, i)
        start = probe_text.find(sentinel, cursor)  # past earlier messages, whatever they hold
        if start < 0 or not full.startswith(probe_text[:start]) or start < cursor:
            raise ChatTemplateError(
                "the chat template does not render this message's content verbatim", i
            )
        end = start + _content_length_at(full, start, message["content"], i)
        turn_end = _turn_end(render, messages[: i + 1], full, end, i)
        spans.append(MessageSpan(start, end, turn_end))
        cursor = end
    return RenderedChat(full, spans)


def _render(render: Renderer, messages: list[Message], index: int | None) -> str:
    try:
        return render(messages)
    except Exception as exc:  # template errors are the caller's conversation's fault
        raise ChatTemplateError(
            f"the chat template rejected the conversation: {exc}", index
        ) from exc


def _content_length_at(full: str, start: int, content: str, index: int) -> int:
    # Some templates trim message content (Llama 3, Gemma), or trim a system prompt joined
    # to it (Mistral: only the joined text's far ends go); accept trimmed forms, nothing looser.
    for candidate in (content, content.strip(), content.rstrip(), content.lstrip()):
        if full.startswith(candidate, start):
            return len(candidate)
    raise ChatTemplateError(
        "the chat template does not render this message's content verbatim", index
    )


def _turn_end(render: Renderer, prefix: list[Message], full: str, end: int, index: int) -> int:
    rendered_prefix = _render(render, prefix, index)
    if not full.startswith(rendered_prefix) or len(rendered_prefix) < end:
        return end
    return end + len(rendered_prefix[end:].rstrip())
