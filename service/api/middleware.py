"""ASGI middleware for the REST door: API keys before bodies, JSON bodies by default, and
the body size limit."""

from __future__ import annotations

import asyncio
from collections.abc import Set

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import KeyChecker
from service.api.errors_http import error_response
from service.api.observe import note_error
from service.errors import LMScoreError, Timeout, TooLarge, Unauthorized


async def _answer(error: LMScoreError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the request with ``error`` in the contract's shape, noted for its metrics."""
    note_error(scope, error)
    await error_response(error)(scope, receive, send)


class ApiKeyMiddleware:
    """Check the API key of a guarded route before anything reads the body, so a caller
    without a valid key gets 401 whatever it sent (unparseable or oversized bodies
    included), as vLLM answers. ``guarded_paths`` is filled once the routes exist."""

    def __init__(self, app: ASGIApp, keys: KeyChecker, guarded_paths: Set[str]) -> None:
        self.app = app
        self.keys = keys
        self.guarded_paths = guarded_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.keys.enabled
            and scope.get("method") != "OPTIONS"  # CORS preflights carry no credentials
            and scope.get("path") in self.guarded_paths
        ):
            headers = scope.get("headers") or []
            values = [
                value.decode("latin-1") for name, value in headers if name == b"authorization"
            ]
            try:
                self.keys.check_all(values)
            except Unauthorized as error:
                await _answer(error, scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming,
    and bodies that have not all arrived ``read_timeout_s`` seconds after the request
    began with 504: a client that declares a body and stops sending would otherwise hold
    its connection for good (the request's own timeout starts once the body is read)."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        complete = False
        loop = asyncio.get_running_loop()
        deadline = None if self.read_timeout_s is None else loop.time() + self.read_timeout_s

        async def limited_receive() -> Message:
            nonlocal seen, complete
            if complete:  # later reads wait for a disconnect: the client's to decide
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise Timeout(
                    f"the request body did not arrive within {self.read_timeout_s:g} s",
                    param="body",
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise TooLarge(self._message(), param="body")
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body exceeds {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(TooLarge(self._message(), param="body"), scope, receive, send)


class JsonByDefaultMiddleware:
    """Read bodies sent without a JSON content type (``curl -d``) as JSON anyway.

    Every endpoint of this API takes JSON; without this, such a body would be rejected
    as "not an object" instead of being parsed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            current = dict(scope.get("headers") or []).get(b"content-type", b"")
            if not current or current.startswith(b"application/x-www-form-urlencoded"):
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class HeadAsGetMiddleware:
    """Answer HEAD as GET without the body (RFC 9110), as Starlette's plain routes do:
    health checks and load balancers probe ``/healthz`` and ``/readyz`` with HEAD, and
    FastAPI's GET routes alone would answer 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
