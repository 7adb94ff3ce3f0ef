"""Errors raised by the lmscore clients.

REST errors carry the contract's JSON body ``{"error": {"type", "message", "param"}}``; gRPC
errors carry the status code, mapped onto the same classes (``status`` is then the HTTP
status the REST door would have answered).
"""

from __future__ import annotations

from typing import Any


class LMScoreError(Exception):
    """Base class: a request the service (or the network) did not complete.

    ``status`` is the HTTP status (0 when no response arrived), ``type`` the contract's
    error type, ``param`` the offending request field (``"texts[3]"``) when known, and
    ``retry_after_s`` the server's Retry-After in seconds when it sent one. An error that
    ended a gRPC stream has ``stream_index``, the position of the request it belongs to.
    """

    default_type = "internal"

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        type: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
        grpc_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type or self.default_type
        self.param = param
        self.retry_after_s = retry_after_s
        self.grpc_code = grpc_code
        self.stream_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what ``score-file`` writes to its rejects file)."""
        return {
            "status": self.status,
            "type": self.type,
            "message": self.message,
            "param": self.param,
        }

    def __str__(self) -> str:
        where = f" ({self.param})" if self.param and self.param not in self.message else ""
        status = f"{self.status} " if self.status else ""
        return f"{status}{self.type}: {self.message}{where}"


class InvalidRequestError(LMScoreError):
    """400/422: bad input (empty text, unknown field, over the context...)."""

    default_type = "invalid_request"


class NotFoundError(LMScoreError):
    """404: unknown model (or path)."""

    default_type = "not_found"


class TooLargeError(LMScoreError):
    """413: body, number of texts or messages over the server's limits."""

    default_type = "too_large"


class UnauthorizedError(LMScoreError):
    """401: missing or wrong API key."""

    default_type = "unauthorized"


class OverloadedError(LMScoreError):
    """429: the server's queue is full (retried with backoff before this is raised)."""

    default_type = "overloaded"


class RequestTimeoutError(LMScoreError):
    """504: the request did not finish within the server's deadline."""

    default_type = "timeout"


class UnavailableError(LMScoreError):
    """503: models loading or server draining (retried before this is raised)."""

    default_type = "unavailable"


class InternalServerError(LMScoreError):
    """500 (or another 5xx): the server failed."""

    default_type = "internal"


class UnexpectedResponseError(LMScoreError):
    """A success status whose body is not the answer the route gives (not JSON, or not
    its shape): something other than lmscore answered, such as a proxy's page."""

    default_type = "unexpected_response"


class ConnectionFailedError(LMScoreError):
    """No response at all: connection refused or reset, network timeout (after retries)."""

    default_type = "connection_error"


_BY_TYPE: dict[str, type[LMScoreError]] = {
    "invalid_request": InvalidRequestError,
    "not_found": NotFoundError,
    "too_large": TooLargeError,
    "unauthorized": UnauthorizedError,
    "overloaded": OverloadedError,
    "timeout": RequestTimeoutError,
    "unavailable": UnavailableError,
    "internal": InternalServerError,
}

_BY_STATUS: dict[int, type[LMScoreError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: UnauthorizedError,
    404: NotFoundError,
    413: TooLargeError,
    422: InvalidRequestError,
    429: OverloadedError,
    503: UnavailableError,
    504: RequestTimeoutError,
}

# gRPC status code name -> (class, HTTP status of the REST door).
GRPC_CODES: dict[str, tuple[type[LMScoreError], int]] = {
    "INVALID_ARGUMENT": (InvalidRequestError, 422),
    "NOT_FOUND": (NotFoundError, 404),
    "UNAUTHENTICATED": (UnauthorizedError, 401),
    "PERMISSION_DENIED": (UnauthorizedError, 403),
    "RESOURCE_EXHAUSTED": (OverloadedError, 429),
    "DEADLINE_EXCEEDED": (RequestTimeoutError, 504),
    "UNAVAILABLE": (UnavailableError, 503),
    "INTERNAL": (InternalServerError, 500),
}


def error_class(status: int, type_: str | None) -> type[LMScoreError]:
    """The class for an HTTP status and contract error type (the type wins when known)."""
    if type_ in _BY_TYPE:
        return _BY_TYPE[type_]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return InvalidRequestError
    return InternalServerError


def from_http(status: int, body: Any, retry_after_s: float | None = None) -> LMScoreError:
    """Build the error for an HTTP response with ``status`` and parsed JSON ``body``
    (anything that is not the contract's error shape is described as best we can)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        type_ = error.get("type") if isinstance(error.get("type"), str) else None
        message = str(error.get("message") or f"HTTP {status}")
        param = error.get("param") if isinstance(error.get("param"), str) else None
    else:
        type_, param = None, None
        detail = body.get("detail") if isinstance(body, dict) else body
        message = str(detail) if detail else f"HTTP {status}"
    cls = error_class(status, type_)
    return cls(message, status=status, type=type_, param=param, retry_after_s=retry_after_s)
