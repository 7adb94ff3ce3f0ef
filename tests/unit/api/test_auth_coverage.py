"""With API keys set, every REST route but the probes, the viewer page and (unless
--protect-metrics) /metrics refuses a request without the exact key: the routes are found
from the app itself, so a route added later is covered without editing this test. Keys
are compared case-sensitively and never written to the logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.routing import APIRoute
from tiny_engines import asgi_client

from service.api.rest import create_app
from service.engine import Engine

ASYNC = pytest.mark.asyncio(loop_scope="session")
KEY = "Secret-Key-1"
OPEN = {"/healthz", "/readyz", "/", "/viewer/{name}", "/openapi.json", "/docs",
        "/docs/oauth2-redirect", "/redoc"}  # fmt: skip


def guarded_routes(engine: Engine) -> list[tuple[str, str]]:
    """(method, path) of every route that should need the key."""
    out = []
    for route in create_app(engine).routes:
        if not isinstance(route, APIRoute) or route.path in OPEN or route.path == "/metrics":
            continue
        out.extend((method, route.path) for method in sorted(route.methods or ()))
    return out


@ASYNC
async def test_every_route_needs_the_exact_key(
    engine_factory: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_factory(api_keys=[KEY])
    routes = guarded_routes(engine)
    paths = {path for _, path in routes}
    assert {"/v1/score/text", "/v1/score/chat", "/v1/completions", "/v1/models",
            "/v1/references", "/tokenize"} <= paths  # fmt: skip
    caplog.set_level(logging.DEBUG)
    async with asgi_client(engine) as client:
        for method, path in routes:
            wrong = ("", f"Bearer {KEY.lower()}", f"Bearer {KEY[:-1]}", f"Bearer {KEY}x")
            for headers in [{"authorization": value} if value else {} for value in wrong]:
                answer = await client.request(method, path, json={}, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.json()["error"]["type"] == "unauthorized"
            right = await client.request(
                method, path, json={}, headers={"authorization": f"Bearer {KEY}"}
            )
            assert right.status_code != 401, (method, path)
        for path in ("/healthz", "/readyz", "/", "/metrics"):
            assert (await client.get(path)).status_code == 200, path
    assert KEY not in caplog.text and KEY.lower() not in caplog.text


@ASYNC
async def test_protect_metrics_puts_metrics_behind_the_key(
    engine_factory: Callable[..., Engine],
) -> None:
    engine = engine_factory(api_keys=[KEY], protect_metrics=True)
    async with asgi_client(engine) as client:
        assert (await client.get("/metrics")).status_code == 401
        ok = await client.get("/metrics", headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert (await client.get("/healthz")).status_code == 200


@ASYNC
async def test_no_cors_headers(engine_factory: Callable[..., Engine]) -> None:
    engine = engine_factory()
    async with asgi_client(engine) as client:
        answer = await client.options(
            "/v1/score/text",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in answer.headers
        scored = await client.post(
            "/v1/score/text", json={"texts": ["hi"]}, headers={"origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in scored.headers
