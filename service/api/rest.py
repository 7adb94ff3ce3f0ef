"""The REST door: FastAPI routes that convert JSON to ``schemas``, call the engine, and back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api.auth import KeyChecker
from service.api.errors_http import error_response, install_error_handlers
from service.api.middleware import BodyLimitMiddleware, JsonByDefaultMiddleware
from service.api.observe import CLIENT_CLOSED, RequestMetricsMiddleware
from service.engine import Engine, ScoreOutcome
from service.errors import Unavailable
from service.schemas import ChatScoreRequest, ModelList, ScoreResponse, TextScoreRequest


def create_app(engine: Engine) -> FastAPI:
    """The REST application over ``engine``."""
    settings = engine.settings
    keys = KeyChecker(settings.all_api_keys())

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        keys.check(authorization)

    app = FastAPI(
        title="lmscore",
        version="0.1.0",
        description="How surprised is a language model by your text: per-token logprobs "
        "(natural log), perplexity, bits per byte/char.",
    )
    app.state.engine = engine
    app.add_middleware(JsonByDefaultMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware)
    install_error_handlers(app)
    guarded = [Depends(authorized)]

    @app.post("/v1/score/text", response_model=ScoreResponse, dependencies=guarded)
    async def score_text(body: TextScoreRequest, request: Request) -> Response:
        """Score texts: per-token logprobs and aggregates (PPL, bits per byte/char)."""
        return await _respond(request, engine.score_text(body))

    @app.post("/v1/score/chat", response_model=ScoreResponse, dependencies=guarded)
    async def score_chat(body: ChatScoreRequest, request: Request) -> Response:
        """Score conversations rendered with the model's chat template (assistant-only by
        default)."""
        return await _respond(request, engine.score_chat(body))

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded)
    async def list_models() -> ModelList:
        """The served models."""
        return engine.list_models()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """200 while the process runs."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> JSONResponse | dict[str, str]:
        """200 once every model is loaded and warmed up; 503 while loading or draining."""
        if engine.draining:
            return error_response(Unavailable("the server is shutting down"))
        if not engine.ready:
            return error_response(Unavailable("models are loading"))
        return {"status": "ready"}

    @app.get("/metrics", dependencies=guarded if settings.protect_metrics else [])
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of every lmscore_* metric."""
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


async def _respond(request: Request, work: Awaitable[ScoreOutcome]) -> Response:
    """Run ``work`` until done or until the client disconnects (then it is cancelled, and
    its queued windows are dropped before they cost a forward pass)."""
    outcome = await _cancel_on_disconnect(request, work)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    timing = outcome.timing
    return JSONResponse(
        outcome.response.model_dump(mode="json"),
        headers={
            "x-queue-time-ms": f"{timing.queue_s * 1000:.1f}",
            "x-inference-time-ms": f"{timing.inference_s * 1000:.1f}",
        },
    )


async def _cancel_on_disconnect(
    request: Request, work: Awaitable[ScoreOutcome]
) -> ScoreOutcome | None:
    """The outcome of ``work``, or None when the client left first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        # Cancellation is only requested above; wait until both have really stopped.
        await asyncio.wait({task, watcher})
    if task.cancelled():
        return None
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    # The body was already read, so the next message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
