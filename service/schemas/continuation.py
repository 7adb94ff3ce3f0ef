"""``POST /v1/score/continuations``: candidate continuations of one context (nats)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.schemas.fields import (
    STRICT_REQUEST,
    NonEmptyText,
    Text,
    is_none,
    served_model_field,
)
from service.schemas.score import Usage


class ContinuationRequest(BaseModel):
    """Candidate continuations of one context, each scored given the context."""

    model_config = STRICT_REQUEST

    model: str | None = served_model_field()
    context: Text = Field(
        ..., description="The shared context; empty means the model's BOS (or EOS) token."
    )
    continuations: list[NonEmptyText] = Field(
        ..., min_length=1, description="Candidate continuations, each scored given the context."
    )
    return_tokens: bool = Field(False, description="Return each continuation's tokens.")
    prepend_bos: bool | None = Field(
        None,
        description="Put the model's BOS (or EOS) token before the context. Unset: where the "
        "tokenizer adds a BOS to a text by default (Llama, Gemma), as "
        "lm-evaluation-harness's hf backend does; SmolLM2's does not. An empty context is "
        "that token whatever this says.",
    )


class ContinuationToken(BaseModel):
    id: int
    text: str
    logprob: float = Field(description="log p(token | context and the tokens before it), nats.")
    rank: int = Field(description="1 for the argmax token.")


class ContinuationResult(BaseModel):
    continuation: str
    num_tokens: int
    sum_logprob: float = Field(description="log p(continuation | context), nats.")
    is_greedy: bool = Field(description="Every token is the model's most likely one.")
    tokens: list[ContinuationToken] | None = Field(None, exclude_if=is_none)


class ContinuationResponse(BaseModel):
    model: str
    model_revision: str
    context_tokens: int = Field(description="Tokens of the context (computed once).")
    results: list[ContinuationResult]
    usage: Usage
