"""The error body every HTTP door returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ErrorType = Literal[
    "invalid_request",
    "not_found",
    "too_large",
    "unauthorized",
    "overloaded",
    "timeout",
    "unavailable",
    "internal",
]


class ErrorDetail(BaseModel):
    """What went wrong (``service.errors.LMScoreError.to_dict``)."""

    type: ErrorType
    message: str
    param: str | None = Field(description="The offending request field (texts[3]), or null.")


class ErrorResponse(BaseModel):
    """The body of every error response of the HTTP doors."""

    error: ErrorDetail
