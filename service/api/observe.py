"""Request metrics for the REST door, as ASGI middleware: count, duration, rejections.

The endpoint label is the route's name (``score_text``), shared with the gRPC door's
method names, so one dashboard query covers both protocols.
"""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

# HTTP status -> rejection reason (requests_rejected_total{reason}).
REJECTION_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    404: "invalid",
    413: "invalid",
    422: "invalid",
    429: "overloaded",
    504: "timeout",
}
UNOBSERVED = frozenset({"metrics", "healthz", "readyz"})
CLIENT_CLOSED = 499  # nginx's code for a client that left before the response


class RequestMetricsMiddleware:
    """Records ``requests_total``, ``request_duration_seconds`` and rejections per route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _route_name(scope) if scope["type"] == "http" else None
        if endpoint is None or endpoint in UNOBSERVED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            labels = {"endpoint": endpoint, "protocol": "http"}
            metrics.REQUEST_DURATION.labels(**labels).observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(code=str(status), **labels).inc()
            reason = "cancelled" if status == CLIENT_CLOSED else REJECTION_BY_STATUS.get(status)
            if reason is not None:
                metrics.REJECTED.labels(reason=reason).inc()


def _route_name(scope: Scope) -> str | None:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "name", None) or "unknown")
    return "unmatched"
