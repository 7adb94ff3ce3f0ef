"""``POST /v1/score/compare``: texts scored under two served models, side by side (nats, bits)."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictStr

from service.schemas.fields import STRICT_REQUEST, NonEmptyText, is_none
from service.schemas.score import Usage


class CompareRequest(BaseModel):
    """Texts scored under two served models, side by side."""

    model_config = STRICT_REQUEST

    models: list[StrictStr] = Field(
        ...,
        min_length=2,
        max_length=2,
        description="Two served models: [a, b]. For binoculars a is the observer, b the "
        "performer; KL divergence is KL(a || b).",
    )
    texts: list[NonEmptyText] = Field(..., min_length=1, description="Texts to score.")
    token_level: bool = Field(
        False,
        description="Also compare the full next-token distributions position by position "
        "(KL divergence, top-1 agreement, binoculars). Needs identical tokenizers (422 "
        "otherwise) and texts that fit the context.",
    )
    return_tokens: bool = Field(False, description="With token_level: per-token KL.")


class ModelScores(BaseModel):
    """One model's scores of one text (as in /v1/score/text)."""

    model: str
    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float
    ppl: float | None
    bits_per_byte: float | None
    bits_per_char: float | None


class CompareToken(BaseModel):
    id: int
    text: str
    kl: float | None = Field(description="KL(P_a || P_b) at this token, nats; null first.")
    agree: bool | None = Field(description="Both models' most likely token is the same.")


class CompareResult(BaseModel):
    scores: list[ModelScores]
    bits_per_byte_ratio: float | None = Field(
        description="a's bits per byte over b's (tokenizer-free: any two models)."
    )
    kl_divergence: float | None = Field(
        None, exclude_if=is_none, description="Mean KL(P_a || P_b) per scored token, nats."
    )
    top1_agreement: float | None = Field(
        None, exclude_if=is_none, description="Share of scored positions with the same argmax."
    )
    binoculars: float | None = Field(
        None,
        exclude_if=is_none,
        description="Mean NLL under b over the mean cross-entropy of a's distribution under "
        "b's (Hans et al., 2024); low suggests machine-generated text.",
    )
    tokens: list[CompareToken] | None = Field(None, exclude_if=is_none)


class CompareResponse(BaseModel):
    models: list[str]
    same_tokenizer: bool
    results: list[CompareResult]
    usage: Usage
