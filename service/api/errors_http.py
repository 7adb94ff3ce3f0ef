"""Turning errors into the contract's JSON error responses (one place for the REST doors)."""

from __future__ import annotations

import logging
import math

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
    from_validation_errors,
    http_status,
)

log = logging.getLogger(__name__)


def error_response(error: LMScoreError) -> JSONResponse:
    """The contract's error body with its status (and Retry-After when there is one)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
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
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return answer_error(request, InternalError(f"internal error: {type(exc).__name__}"))


def answer_error(request: Request, error: LMScoreError) -> JSONResponse:
    """The error's response, noted for the request's metrics."""
    note_error(request.scope, error)
    return error_response(error)
