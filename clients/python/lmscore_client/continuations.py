"""Continuations of one context (``POST /v1/score/continuations``, gRPC
``ScoreContinuations``): the request body and the typed answer. Logprobs are natural logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmscore_client.results import Usage


@dataclass(frozen=True)
class ContinuationToken:
    """A continuation token: ``logprob`` given the context and the tokens before it (nats);
    ``rank`` 1 for the model's most likely token."""

    id: int
    text: str
    logprob: float
    rank: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContinuationToken:
        return cls(data["id"], data["text"], data["logprob"], data["rank"])


@dataclass(frozen=True)
class ContinuationResult:
    """One candidate: ``sum_logprob`` = log p(continuation | context), nats; ``is_greedy``
    when every token is the model's most likely one."""

    continuation: str
    num_tokens: int
    sum_logprob: float
    is_greedy: bool
    tokens: list[ContinuationToken] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContinuationResult:
        tokens = data.get("tokens")
        return cls(
            continuation=data["continuation"],
            num_tokens=data["num_tokens"],
            sum_logprob=data["sum_logprob"],
            is_greedy=bool(data.get("is_greedy", False)),
            tokens=[ContinuationToken.from_json(t) for t in tokens] if tokens else None,
        )


@dataclass(frozen=True)
class ContinuationResponse:
    """Every candidate in request order; the context's token count (computed once)."""

    model: str
    model_revision: str
    context_tokens: int
    results: list[ContinuationResult]
    usage: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContinuationResponse:
        return cls(
            model=data["model"],
            model_revision=data["model_revision"],
            context_tokens=data["context_tokens"],
            results=[ContinuationResult.from_json(r) for r in data["results"]],
            usage=Usage.from_json(data["usage"]),
        )
