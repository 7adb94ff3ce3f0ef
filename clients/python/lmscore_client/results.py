"""Typed results of the scoring endpoints, parsed from REST JSON (unknown fields ignored).

Units: every logprob is a natural log (nats); ``mean_nll`` is nats per scored token;
``bits_per_byte`` / ``bits_per_char`` are base-2 bits per UTF-8 byte / Unicode code point
of the scored tokens' text. Values the server reports as null are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TopToken:
    """One alternative at a position."""

    id: int
    text: str
    logprob: float  # nats

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TopToken:
        return cls(id=data["id"], text=data["text"], logprob=data["logprob"])


@dataclass(frozen=True)
class TokenScore:
    """One token: ``logprob`` is log p(token | everything before it) in nats, ``None`` for
    the first token; ``start``/``end`` are code-point offsets into the submitted text (the
    rendered conversation for chats). ``top`` is present only with ``top_k > 0``;
    ``message_index``/``scored`` only for chats."""

    id: int
    text: str
    start: int
    end: int
    logprob: float | None
    rank: int | None
    top: list[TopToken] | None = None
    message_index: int | None = None
    scored: bool | None = None
    # With ``Distribution(entropy=True)``: entropy of this token's distribution, nats.
    entropy: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenScore:
        top = data.get("top")
        return cls(
            id=data["id"],
            text=data["text"],
            start=data["start"],
            end=data["end"],
            logprob=data.get("logprob"),
            rank=data.get("rank"),
            top=None if top is None else [TopToken.from_json(t) for t in top],
            message_index=data.get("message_index"),
            scored=data.get("scored"),
            entropy=data.get("entropy"),
        )


@dataclass(frozen=True)
class WordScore:
    """One word (the words tile the text): ``logprob`` is the sum of its tokens' logprobs,
    ``logprob_corrected`` log p(word | context) with the beginning-of-word correction
    (nats; ``None`` where undefined), ``surprisal_bits`` that in bits."""

    text: str
    start: int
    end: int
    num_tokens: int
    logprob: float | None
    logprob_corrected: float | None
    surprisal_bits: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WordScore:
        return cls(
            text=data["text"],
            start=data["start"],
            end=data["end"],
            num_tokens=data["num_tokens"],
            logprob=data.get("logprob"),
            logprob_corrected=data.get("logprob_corrected"),
            surprisal_bits=data.get("surprisal_bits"),
        )


@dataclass(frozen=True)
class MessageScore:
    """Aggregates over one message of a conversation (nats; ``None`` with nothing scored)."""

    index: int
    role: str
    scored: bool
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageScore:
        return cls(
            index=data["index"],
            role=data["role"],
            scored=data["scored"],
            num_scored_tokens=data["num_scored_tokens"],
            sum_logprob=data["sum_logprob"],
            mean_nll=data.get("mean_nll"),
            ppl=data.get("ppl"),
        )


@dataclass(frozen=True)
class TextResult:
    """Scores of one text or conversation. ``percentile`` (0-100) and ``is_outlier`` are
    set only when the request named a reference profile."""

    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None
    bits_per_byte: float | None
    bits_per_char: float | None
    truncated: bool = False
    tokens: list[TokenScore] | None = None
    messages: list[MessageScore] | None = None
    percentile: float | None = None
    is_outlier: bool | None = None
    # With ``Distribution(entropy=True)``: nats per scored token / bits per character.
    mean_entropy: float | None = None
    entropy_bits_per_char: float | None = None
    # With ``Distribution(min_k=True)``: Min-K% Prob (nats) and Min-K%++ (unitless).
    min_k_logprob: float | None = None
    min_k_plus_plus: float | None = None
    # With ``Distribution(words=True)``: the text's words in order.
    words: list[WordScore] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextResult:
        tokens = data.get("tokens")
        messages = data.get("messages")
        words = data.get("words")
        return cls(
            num_tokens=data["num_tokens"],
            num_scored_tokens=data["num_scored_tokens"],
            sum_logprob=data["sum_logprob"],
            mean_nll=data.get("mean_nll"),
            ppl=data.get("ppl"),
            bits_per_byte=data.get("bits_per_byte"),
            bits_per_char=data.get("bits_per_char"),
            truncated=bool(data.get("truncated", False)),
            tokens=None if tokens is None else [TokenScore.from_json(t) for t in tokens],
            messages=None if messages is None else [MessageScore.from_json(m) for m in messages],
            percentile=data.get("percentile"),
            is_outlier=data.get("is_outlier"),
            mean_entropy=data.get("mean_entropy"),
            entropy_bits_per_char=data.get("entropy_bits_per_char"),
            min_k_logprob=data.get("min_k_logprob"),
            min_k_plus_plus=data.get("min_k_plus_plus"),
            words=None if words is None else [WordScore.from_json(w) for w in words],
        )

    def metric(self, name: str) -> float | None:
        """The value of a scalar metric by name (``ppl``, ``bits_per_char``...)."""
        value = getattr(self, name)
        return None if value is None else float(value)


@dataclass(frozen=True)
class Aggregate:
    """Token-weighted over all results: ``ppl = exp(-sum_logprob / num_scored_tokens)``."""

    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Aggregate:
        return cls(
            num_scored_tokens=data["num_scored_tokens"],
            sum_logprob=data["sum_logprob"],
            mean_nll=data.get("mean_nll"),
            ppl=data.get("ppl"),
        )


@dataclass(frozen=True)
class Usage:
    """Tokens fed to the model (BOS included)."""

    prompt_tokens: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(prompt_tokens=data["prompt_tokens"])


@dataclass(frozen=True)
class ScoreResponse:
    """The answer of ``/v1/score/text`` and ``/v1/score/chat`` (one result per input)."""

    model: str
    model_revision: str
    results: list[TextResult]
    aggregate: Aggregate
    usage: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreResponse:
        return cls(
            model=data["model"],
            model_revision=data["model_revision"],
            results=[TextResult.from_json(r) for r in data["results"]],
            aggregate=Aggregate.from_json(data["aggregate"]),
            usage=Usage.from_json(data["usage"]),
        )


@dataclass(frozen=True)
class ModelCard:
    """One served model (``GET /v1/models``); ``max_context`` in tokens."""

    id: str
    backend: str
    dtype: str
    device: str
    max_context: int
    revision: str
    has_chat_template: bool = True
    compiled: bool = False  # the server's decoder layers run compiled (--compile)
    object: str = "model"
    created: int = 0  # Unix seconds the model was loaded (0 from servers that do not say)
    owned_by: str = "lmscore"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        return cls(
            id=data["id"],
            backend=data["backend"],
            dtype=data["dtype"],
            device=data["device"],
            max_context=data["max_context"],
            revision=data["revision"],
            has_chat_template=bool(data.get("has_chat_template", True)),
            compiled=bool(data.get("compiled", False)),
            object=data.get("object", "model"),
            created=int(data.get("created", 0)),
            owned_by=str(data.get("owned_by", "lmscore")),
        )
