"""``GET /v1/models`` and ``GET /v1/references``: what the server has loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    backend: str
    dtype: str
    device: str
    max_context: int
    revision: str
    has_chat_template: bool = True
    compiled: bool = Field(
        False,
        description="transformers backend: the decoder layers run compiled (--compile). "
        "bf16 scores of compiled and eager layers differ (median ~1.4% of a text's PPL); "
        "float32 ones agree to the contract's 1e-4.",
    )
    created: int = Field(0, description="Unix time (seconds) the model was loaded (OpenAI).")
    owned_by: str = Field("lmscore", description="OpenAI's owner field: always 'lmscore'.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ReferenceCard(BaseModel):
    """A loaded reference profile: the model it was calibrated on, its metric, and the
    outlier threshold (in the metric's unit)."""

    name: str
    model: str
    revision: str
    metric: str
    threshold: float
    count: int


class ReferenceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ReferenceCard]
