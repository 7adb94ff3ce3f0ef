"""Two models on the same texts (``POST /v1/score/compare``, gRPC ``CompareModels``): the
request body and the typed answer. Logprobs and KL divergences are in nats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmscore_client.results import Usage


@dataclass(frozen=True)
class ModelScores:
    """One model's scores of one text (as ``TextResult``, without detail)."""

    model: str
    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float
    ppl: float | None
    bits_per_byte: float | None
    bits_per_char: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelScores:
        return cls(
            model=data["model"],
            num_tokens=data.get("num_tokens", 0),
            num_scored_tokens=data.get("num_scored_tokens", 0),
            sum_logprob=data.get("sum_logprob", 0.0),
            ppl=data.get("ppl"),
            bits_per_byte=data.get("bits_per_byte"),
            bits_per_char=data.get("bits_per_char"),
        )


@dataclass(frozen=True)
class CompareToken:
    """KL(P_a || P_b) at one token (nats) and whether both argmaxes agree (None first)."""

    id: int
    text: str
    kl: float | None
    agree: bool | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareToken:
        return cls(data.get("id", 0), data.get("text", ""), data.get("kl"), data.get("agree"))


@dataclass(frozen=True)
class CompareResult:
    """Both models' scores of one text; ``bits_per_byte_ratio`` = a's over b's; with
    ``token_level``: mean KL(a || b), top-1 agreement and the Binoculars score."""

    scores: list[ModelScores]
    bits_per_byte_ratio: float | None
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    binoculars: float | None = None
    tokens: list[CompareToken] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareResult:
        tokens = data.get("tokens")
        return cls(
            scores=[ModelScores.from_json(s) for s in data["scores"]],
            bits_per_byte_ratio=data.get("bits_per_byte_ratio"),
            kl_divergence=data.get("kl_divergence"),
            top1_agreement=data.get("top1_agreement"),
            binoculars=data.get("binoculars"),
            tokens=[CompareToken.from_json(t) for t in tokens] if tokens else None,
        )


@dataclass(frozen=True)
class CompareResponse:
    """One result per text; ``same_tokenizer`` says whether token-level metrics apply."""

    models: list[str]
    same_tokenizer: bool
    results: list[CompareResult]
    usage: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareResponse:
        return cls(
            models=list(data["models"]),
            same_tokenizer=bool(data.get("same_tokenizer", False)),
            results=[CompareResult.from_json(r) for r in data["results"]],
            usage=Usage.from_json(data["usage"]),
        )
