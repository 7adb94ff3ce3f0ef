"""The REST application: middleware, error handlers, and the routers of every HTTP door.

Routes live at module level, one module per door (``score_routes``, ``openai_compat``,
``openai_chat``, ``tokenizer_routes``, ``viewer``, ``probe_routes``), each with an ``install``; this module assembles them.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from service.api import (
    openai_chat,
    openai_compat,
    probe_routes,
    score_routes,
    tokenizer_routes,
    viewer,
)
from service.api.auth import KeyChecker
from service.api.deps import GUARDED, authorized
from service.api.errors_http import install_error_handlers
from service.api.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HeadAsGetMiddleware,
    JsonByDefaultMiddleware,
)
from service.api.observe import RequestMetricsMiddleware
from service.engine import Engine
from service.served import TIMING_HEADERS
from service.settings import Settings


def create_app(engine: Engine) -> FastAPI:
    """The REST application over ``engine``."""
    settings = engine.settings
    app = FastAPI(
        title="lmscore",
        version="0.1.0",
        description="How surprised is a language model by your text: per-token logprobs "
        "(natural log), perplexity, bits per byte/char.",
    )
    app.state.engine = engine
    app.state.keys = KeyChecker(settings.all_api_keys())
    guarded_paths: set[str] = set()  # filled below, once the routes are registered
    _add_middleware(app, settings, guarded_paths)
    install_error_handlers(app)
    openai_compat.install(app, GUARDED)
    openai_chat.install(app, GUARDED)
    tokenizer_routes.install(app, GUARDED)
    score_routes.install(app, GUARDED)
    viewer.install(app)
    probe_routes.install(app, GUARDED if settings.protect_metrics else [])
    guarded_paths.update(
        route.path
        for route in app.routes
        if isinstance(route, APIRoute)
        and any(d.dependency is authorized for d in route.dependencies)
    )
    return app


def _add_middleware(app: FastAPI, settings: Settings, guarded_paths: set[str]) -> None:
    """The middleware stack; the last added runs first (CORS, then HEAD, then metrics...)."""
    app.add_middleware(JsonByDefaultMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.request_timeout_s,
    )
    app.add_middleware(ApiKeyMiddleware, keys=app.state.keys, guarded_paths=guarded_paths)
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
    if settings.cors_allow_origin:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origin,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            expose_headers=["retry-after", *TIMING_HEADERS],
        )
