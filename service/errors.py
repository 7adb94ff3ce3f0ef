"""One error hierarchy for every door, with its HTTP-status and gRPC-code tables.

The engine raises these; each door converts them with the tables below, so a new door
never invents its own mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class LMScoreError(Exception):
    """Base of every error the service reports to a caller.

    ``type`` is the contract's error type string; ``param`` names the offending request
    field (``texts[3]``) when there is one.
    """

    type = "internal"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, object]:
        """The contract's error body: ``{"error": {"type", "message", "param"}}``."""
        return {"error": {"type": self.type, "message": self.message, "param": self.param}}


class InvalidRequest(LMScoreError):
    """The request is well-formed JSON but breaks a rule (422)."""

    type = "invalid_request"


class MalformedRequest(InvalidRequest):
    """The body could not be parsed at all (400 on REST)."""


class NotFound(LMScoreError):
    """An unknown model (404)."""

    type = "not_found"


class TooLarge(LMScoreError):
    """Body, number of texts or messages over the configured limits (413)."""

    type = "too_large"


class Unauthorized(LMScoreError):
    """Missing or wrong API key (401)."""

    type = "unauthorized"


class Overloaded(LMScoreError):
    """The model's queue is full (429 with Retry-After)."""

    type = "overloaded"


class Timeout(LMScoreError):
    """The request did not finish within its deadline (504)."""

    type = "timeout"


class Unavailable(LMScoreError):
    """Models still loading, or the server is draining (503)."""

    type = "unavailable"


class InternalError(LMScoreError):
    """A fault of ours (500). Bad input must never end here."""

    type = "internal"


HTTP_STATUS: dict[type[LMScoreError], int] = {
    MalformedRequest: 400,
    InvalidRequest: 422,
    NotFound: 404,
    TooLarge: 413,
    Unauthorized: 401,
    Overloaded: 429,
    Timeout: 504,
    Unavailable: 503,
    InternalError: 500,
    LMScoreError: 500,
}

# gRPC status code names (grpc.StatusCode members), kept as strings so this module
# does not import grpc.
GRPC_CODE: dict[type[LMScoreError], str] = {
    MalformedRequest: "INVALID_ARGUMENT",
    InvalidRequest: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
    TooLarge: "INVALID_ARGUMENT",
    Unauthorized: "UNAUTHENTICATED",
    Overloaded: "RESOURCE_EXHAUSTED",
    Timeout: "DEADLINE_EXCEEDED",
    Unavailable: "UNAVAILABLE",
    InternalError: "INTERNAL",
    LMScoreError: "INTERNAL",
}


def _lookup(table: dict[type[LMScoreError], object], error: LMScoreError) -> object:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    raise KeyError(type(error))


def http_status(error: LMScoreError) -> int:
    """HTTP status for an error, by the most specific class in the table."""
    status = _lookup(HTTP_STATUS, error)  # type: ignore[arg-type]
    assert isinstance(status, int)
    return status


def grpc_code_name(error: LMScoreError) -> str:
    """gRPC status code name (``"INVALID_ARGUMENT"``) for an error."""
    code = _lookup(GRPC_CODE, error)  # type: ignore[arg-type]
    assert isinstance(code, str)
    return code


def param_from_loc(loc: Sequence[Any]) -> str | None:
    """A pydantic error location as a field path: ``("body", "texts", 3)`` -> ``"texts[3]"``,
    ``("conversations", 0, 2, "role")`` -> ``"conversations[0][2].role"``."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


# pydantic's error types for a model given something that is not a mapping.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """The first pydantic validation problem as an InvalidRequest naming its field
    (MalformedRequest when the body was not JSON at all)."""
    if not errors:
        return InvalidRequest("invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return MalformedRequest(f"the body is not valid JSON: {first.get('msg', '')}")
    if tuple(first.get("loc", ())) == ("body",):  # the body as a whole
        if first.get("type") == "missing":  # FastAPI's reading of an empty body
            return MalformedRequest("the body is empty: send a JSON object")
        if first.get("type") in _NOT_AN_OBJECT:
            return InvalidRequest("the body must be a JSON object", param="body")
    # A validator may name the exact item at fault (``prompt[1]``) below its field.
    named = (first.get("ctx") or {}).get("param")
    if isinstance(named, str):
        return InvalidRequest(str(first.get("msg", "invalid value")), param=named)
    param = param_from_loc(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing" and param:
        message = "field required"
    return InvalidRequest(f"{param}: {message}" if param else message, param=param)
