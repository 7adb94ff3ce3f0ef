"""Turning errors into the contract's JSON error responses (one place for the REST doors)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.observe import note_error
from service.errors import (
    InternalError,
    InvalidRequest,
    LMScoreError,
    NotFound,
    Unauthorized,
    from_validation_errors,
    http_status,
)
from service.schemas import ErrorResponse

log = logging.getLogger(__name__)

# What each error status means, as the OpenAPI document says it.
_MEANING = {
    400: "invalid_request: the body is not valid JSON.",
    401: "unauthorized: missing or wrong API key.",
    404: "not_found: unknown model.",
    413: "too_large: body, texts, messages or characters over the limits.",
    422: "invalid_request: the request breaks a rule (named by param).",
    429: "overloaded: the model's queue is full; retry after Retry-After seconds.",
    500: "internal: a fault of the server.",
    503: "unavailable: models still loading, or the server is shutting down.",
    504: "timeout: the request did not finish within its deadline.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
        "required": True,
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme the key goes in: Bearer.",
        "schema": {"type": "string", "const": "Bearer"},
        "required": True,
    }
}

# The error statuses each kind of route answers with (500 only if the server is at fault).
# 422 is declared wherever there is a parameter (the authorization header included), as
# FastAPI would, but with the contract's body.
SCORING_ERRORS = (400, 401, 404, 413, 422, 429, 500, 503, 504)
TOKENIZER_ERRORS = (400, 401, 404, 413, 422, 500, 503)
MODEL_LOOKUP_ERRORS = (401, 404, 422, 500, 503)
LISTING_ERRORS = (401, 422, 500)


def error_responses(statuses: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring the contract's error body for ``statuses`` (which
    also replaces FastAPI's default 422 body, a shape this service never sends)."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        declared[status] = {"model": ErrorResponse, "description": _MEANING[status]}
        if status == 429:
            declared[status]["headers"] = _RETRY_AFTER
        if status == 401:
            declared[status]["headers"] = _WWW_AUTHENTICATE
    return declared


def error_response(error: LMScoreError) -> JSONResponse:
    """The contract's error body with its status (and Retry-After when there is one)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if isinstance(error, Unauthorized):  # RFC 9110: a 401 names the scheme it wants
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.to_dict(), status_code=http_status(error), headers=headers)


def validation_error(exc: RequestValidationError) -> LMScoreError:
    """The first validation problem of a REST body as an InvalidRequest."""
    return from_validation_errors(exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the REST app in the contract's shape."""

    @app.exception_handler(LMScoreError)
    async def _ours(request: Request, exc: LMScoreError) -> JSONResponse:
        return answer_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer_error(request, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: LMScoreError
        if isinstance(exc.__cause__, LMScoreError):  # e.g. the body limit, hit mid-parse
            return answer_error(request, exc.__cause__)
        if exc.status_code == 404:
            error = NotFound(str(exc.detail))
        elif exc.status_code < 500:
            error = InvalidRequest(str(exc.detail))
        else:
            error = InternalError(str(exc.detail))
        response = answer_error(request, error)
        response.status_code = exc.status_code
        response.headers.update(exc.headers or {})  # e.g. a 405's Allow
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return answer_error(request, InternalError(f"internal error: {type(exc).__name__}"))


def answer_error(request: Request, error: LMScoreError) -> JSONResponse:
    """The error's response, noted for the request's metrics."""
    note_error(request.scope, error)
    return error_response(error)
