"""Request metrics for the REST doors, as ASGI middleware around the core's RequestRecord.

The endpoint label is the route's name (``score_text``), shared with the gRPC door's
method names, so one dashboard query covers both protocols. The error handlers note the
error that answered a request (``note_error``) so the core reads the rejection reason from
the error itself, not from the status.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InternalError, LMScoreError
from service.request_metrics import CANCELLED, RequestRecord

UNOBSERVED = frozenset({"metrics", "healthz", "readyz"})
CLIENT_CLOSED = 499  # nginx's code for a client that left before the response
_ERROR_KEY = "lmscore_error"


def note_error(scope: Scope, error: LMScoreError) -> None:
    """Remember the error a request is answered with, for its metrics."""
    scope.setdefault("state", {})[_ERROR_KEY] = error


class RequestMetricsMiddleware:
    """Records every observed route's call through the core's ``RequestRecord``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _route_name(scope) if scope["type"] == "http" else None
        if endpoint is None or endpoint in UNOBSERVED:
            await self.app(scope, receive, send)
            return
        record = RequestRecord(endpoint, "http")
        state: dict[str, object] = scope.setdefault("state", {})  # shared with inner scopes
        status = CLIENT_CLOSED

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            error = exc if isinstance(exc, LMScoreError) else InternalError(type(exc).__name__)
            record.finish("500", error)
            raise
        except BaseException:  # the server cancelled the request: its client left
            record.finish(str(CLIENT_CLOSED), CANCELLED)
            raise
        noted = state.get(_ERROR_KEY)
        if status == CLIENT_CLOSED:
            record.finish(str(status), CANCELLED)
        else:
            record.finish(str(status), noted if isinstance(noted, LMScoreError) else None)


def _route_name(scope: Scope) -> str | None:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "name", None) or "unknown")
    return "unmatched"
