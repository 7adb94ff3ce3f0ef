"""JSON bodies of the scoring endpoints (shared by the blocking and async REST clients).

Optional fields (``stride``, ``reference``, ``score_roles``) are sent only when set, so a
server that predates a field still accepts requests that do not use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Conversation = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Distribution:
    """Scores from the model's full next-token distribution to ask for (transformers
    backend): ``entropy`` adds ``mean_entropy``, ``entropy_bits_per_char`` and per-token
    ``entropy`` (nats); ``min_k`` adds ``min_k_logprob`` (Min-K% Prob, nats) and
    ``min_k_plus_plus`` (Min-K%++) over the ``min_k_percent`` least likely tokens;
    ``words`` (texts only) adds per-word scores (``TextResult.words``)."""

    entropy: bool = False
    min_k: bool = False
    min_k_percent: float = 20.0
    words: bool = False

    def fields(self) -> dict[str, Any]:
        """The request fields, only those that differ from the server's defaults."""
        fields: dict[str, Any] = {}
        if self.entropy:
            fields["return_entropy"] = True
        if self.min_k:
            fields["min_k"] = True
            fields["min_k_percent"] = self.min_k_percent
        if self.words:
            fields["words"] = True
        return fields


def text_payload(
    texts: str | Sequence[str],
    *,
    model: str = "default",
    return_tokens: bool = False,
    top_k: int = 0,
    prepend_bos: bool = False,
    overflow: str = "error",
    stride: int | None = None,
    reference: str | None = None,
    distribution: Distribution | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/score/text`` (optional fields only when set)."""
    body: dict[str, Any] = {
        "model": model,
        "texts": [texts] if isinstance(texts, str) else list(texts),
        "return_tokens": return_tokens,
        "top_k": top_k,
        "prepend_bos": prepend_bos,
        "overflow": overflow,
    }
    if stride is not None:
        body["stride"] = stride
    if reference is not None:
        body["reference"] = reference
    if distribution is not None:
        body.update(distribution.fields())
    return body


def conversation_list(
    conversations: Sequence[Conversation] | Conversation,
) -> list[list[Any]]:
    """A list of conversations, each a list of messages (copied as dicts). A single
    conversation (a sequence of message mappings) is wrapped; anything else is passed on
    for the server to judge."""
    items: list[Any] = list(conversations)
    if items and isinstance(items[0], Mapping):
        items = [items]  # one conversation
    return [
        [dict(m) if isinstance(m, Mapping) else m for m in conv]
        if isinstance(conv, list | tuple)
        else conv
        for conv in items
    ]


def chat_payload(
    conversations: Sequence[Conversation] | Conversation,
    *,
    model: str = "default",
    score_roles: Sequence[str] | None = None,
    include_end_of_turn: bool = False,
    return_tokens: bool = False,
    top_k: int = 0,
    overflow: str = "error",
    stride: int | None = None,
    reference: str | None = None,
    distribution: Distribution | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/score/chat``. A single conversation (a list of message
    dicts) is accepted as well as a list of them."""
    body: dict[str, Any] = {
        "model": model,
        "conversations": conversation_list(conversations),
        "include_end_of_turn": include_end_of_turn,
        "return_tokens": return_tokens,
        "top_k": top_k,
        "overflow": overflow,
    }
    if score_roles is not None:
        body["score_roles"] = list(score_roles)
    if stride is not None:
        body["stride"] = stride
    if reference is not None:
        body["reference"] = reference
    if distribution is not None:
        body.update(distribution.fields())
    return body
