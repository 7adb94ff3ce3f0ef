"""With API keys set, every REST route and gRPC method but the probes, the viewer page and
(unless --protect-metrics) /metrics refuses a request without the exact key: routes and
methods are found from the app and the service descriptor, so one added later is covered
without editing this test. Two Authorization headers are refused, whichever holds the key. Keys are compared case-sensitively and never written to the
logs. CORS headers are sent only to the origins --cors-allow-origin lists."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from fastapi.routing import APIRoute
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tiny_engines import asgi_client

from service.api.grpc_server import GrpcDoor
from service.api.pb.lmscore.v1 import scoring_pb2 as pb
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
                assert answer.headers["www-authenticate"] == "Bearer"  # RFC 9110: a 401 has one
            for twice in ([f"Bearer {KEY}", "Bearer x"], ["Bearer x", f"Bearer {KEY}"]):
                headers = [("authorization", value) for value in twice]
                answer = await client.request(method, path, json={}, headers=headers)
                assert answer.status_code == 401, (method, path, twice)
            right = await client.request(
                method, path, json={}, headers={"authorization": f"Bearer {KEY}"}
            )
            assert right.status_code != 401, (method, path)
        for path in ("/healthz", "/readyz", "/", "/metrics"):
            assert (await client.get(path)).status_code == 200, path
    assert KEY not in caplog.text and KEY.lower() not in caplog.text


@ASYNC
async def test_the_key_is_checked_before_the_body_is_read(
    engine_factory: Callable[..., Engine],
) -> None:
    """A caller without the key gets 401 whatever its body: unparseable or over the size
    limit included (as vLLM answers); with the key, the body's own error comes back."""
    engine = engine_factory(api_keys=[KEY], max_body_bytes=1024)
    posts = [path for method, path in guarded_routes(engine) if method == "POST"]
    bodies = {400: b'{"texts": ["unclosed"', 413: b'{"texts": ["' + b"x" * 2048 + b'"]}'}
    async with asgi_client(engine) as client:
        for path in posts:
            for status, content in bodies.items():
                for key, expected in ((f"Bearer {KEY}x", 401), (f"Bearer {KEY}", status)):
                    headers = {"authorization": key, "content-type": "application/json"}
                    answer = await client.post(path, content=content, headers=headers)
                    assert answer.status_code == expected, (path, status, key)


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


@ASYNC
async def test_cors_only_for_listed_origins(engine_factory: Callable[..., Engine]) -> None:
    engine = engine_factory(api_keys=[KEY], cors_allow_origin=["https://app.example"])
    preflight = {"access-control-request-method": "POST"}
    async with asgi_client(engine) as client:
        allowed = await client.options(
            "/v1/score/text",
            headers={
                "origin": "https://app.example",
                "access-control-request-headers": "authorization,content-type",
                **preflight,
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = await client.options(
            "/v1/score/text", headers={"origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in refused.headers
        scored = await client.post(
            "/v1/score/text",
            json={"texts": ["hi"]},
            headers={"origin": "https://app.example", "authorization": f"Bearer {KEY}"},
        )
        assert scored.status_code == 200
        assert scored.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-queue-time-ms" in scored.headers["access-control-expose-headers"]
        keyless = await client.post(
            "/v1/score/text", json={"texts": ["hi"]}, headers={"origin": "https://app.example"}
        )
        assert keyless.status_code == 401  # CORS lets the browser read answers, not skip keys


def grpc_methods() -> list[str]:
    """Every method of lmscore.v1.Scorer, from the service descriptor."""
    service = pb.DESCRIPTOR.services_by_name["Scorer"]
    return [method.name for method in service.methods]


@ASYNC
async def test_every_grpc_method_needs_the_exact_key(
    engine_factory: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    methods = grpc_methods()
    assert {"ScoreText", "ScoreChat", "ScoreContinuations", "CompareModels", "ListModels",
            "ScoreTextStream"} <= set(methods)  # fmt: skip
    caplog.set_level(logging.DEBUG)
    door = GrpcDoor(engine_factory(api_keys=[KEY]))
    port = door.bind("127.0.0.1", 0)
    await door.start()
    await door.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method in methods:
                for value in ("", f"Bearer {KEY.lower()}", f"Bearer {KEY}x", KEY):
                    metadata = (("authorization", value),) if value else ()
                    code = await call_grpc(channel, method, metadata)
                    assert code == grpc.StatusCode.UNAUTHENTICATED, (method, value)
                for twice in ((f"Bearer {KEY}", "Bearer x"), ("Bearer x", f"Bearer {KEY}")):
                    metadata = tuple(("authorization", value) for value in twice)
                    code = await call_grpc(channel, method, metadata)
                    assert code == grpc.StatusCode.UNAUTHENTICATED, (method, twice)
                right = await call_grpc(channel, method, (("authorization", f"Bearer {KEY}"),))
                assert right != grpc.StatusCode.UNAUTHENTICATED, method
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING  # open, as /healthz
    finally:
        await door.stop(0)
    assert KEY not in caplog.text and KEY.lower() not in caplog.text


async def call_grpc(
    channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    """The status of one call with a default (empty) request, by the method's descriptor."""
    descriptor = pb.DESCRIPTOR.services_by_name["Scorer"].methods_by_name[method]
    request_class = message_class(descriptor.input_type)
    response_class = message_class(descriptor.output_type)
    path = f"/{descriptor.containing_service.full_name}/{method}"
    serialize, parse = request_class.SerializeToString, response_class.FromString
    try:
        if descriptor.client_streaming:
            stream = channel.stream_stream(path, serialize, parse)
            async for _ in stream(iter([request_class(texts=["hi"])]), metadata=metadata):
                pass
        else:
            await channel.unary_unary(path, serialize, parse)(
                request_class(), metadata=metadata, timeout=30
            )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def message_class(descriptor: Any) -> Any:
    return getattr(pb, descriptor.name)
