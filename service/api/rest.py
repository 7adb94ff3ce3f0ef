"""The REST door: FastAPI routes that convert JSON to ``schemas``, call the engine, and back."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api.auth import KeyChecker
from service.api.errors_http import (
    LISTING_ERRORS,
    MODEL_LOOKUP_ERRORS,
    SCORING_ERRORS,
    error_response,
    error_responses,
    install_error_handlers,
)
from service.api.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HeadAsGetMiddleware,
    JsonByDefaultMiddleware,
)
from service.api.observe import CLIENT_CLOSED, RequestMetricsMiddleware
from service.api.openai_compat import install_openai_routes
from service.api.responses import unless_disconnected
from service.api.viewer import install_viewer
from service.engine import Engine
from service.errors import Unavailable
from service.schemas import (
    ChatScoreRequest,
    CompareRequest,
    CompareResponse,
    ContinuationRequest,
    ContinuationResponse,
    ModelCard,
    ModelList,
    ReferenceList,
    ScoreResponse,
    TextScoreRequest,
)
from service.served import TIMING_HEADERS, CompareOutcome, ContinuationOutcome, ScoreOutcome


def create_app(engine: Engine) -> FastAPI:
    """The REST application over ``engine``."""
    settings = engine.settings
    keys = KeyChecker(settings.all_api_keys())

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        # async: a plain function would run in the thread pool, one thread hop per request
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
    guarded_paths: set[str] = set()  # filled below, once the routes are registered
    app.add_middleware(ApiKeyMiddleware, keys=keys, guarded_paths=guarded_paths)
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
    install_error_handlers(app)
    guarded = [Depends(authorized)]
    scoring = error_responses(SCORING_ERRORS)
    install_openai_routes(app, engine, guarded)

    @app.post(
        "/v1/score/text", response_model=ScoreResponse, dependencies=guarded, responses=scoring
    )
    async def score_text(body: TextScoreRequest, request: Request) -> Response:
        """Score texts: per-token logprobs and aggregates (PPL, bits per byte/char)."""
        return await _respond(request, engine.score_text(body))

    @app.post(
        "/v1/score/chat", response_model=ScoreResponse, dependencies=guarded, responses=scoring
    )
    async def score_chat(body: ChatScoreRequest, request: Request) -> Response:
        """Score conversations rendered with the model's chat template (assistant-only by
        default)."""
        return await _respond(request, engine.score_chat(body))

    @app.post(
        "/v1/score/continuations",
        response_model=ContinuationResponse,
        dependencies=guarded,
        responses=scoring,
    )
    async def score_continuations(body: ContinuationRequest, request: Request) -> Response:
        """Score candidate continuations of one context (each log p(continuation |
        context), greedy or not); the context is computed once."""
        return await _respond(request, engine.score_continuations(body))

    @app.post(
        "/v1/score/compare", response_model=CompareResponse, dependencies=guarded, responses=scoring
    )
    async def score_compare(body: CompareRequest, request: Request) -> Response:
        """Score texts under two models: both models' scores, the bits-per-byte ratio, and
        with token_level (identical tokenizers) KL divergence, top-1 agreement and
        binoculars."""
        return await _respond(request, engine.compare_models(body))

    listing = error_responses(LISTING_ERRORS)

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, responses=listing)
    async def list_models() -> ModelList:
        """The served models."""
        return engine.list_models()

    @app.get(
        "/v1/models/{model_id:path}",
        response_model=ModelCard,
        dependencies=guarded,
        responses=error_responses(MODEL_LOOKUP_ERRORS),
    )
    async def retrieve_model(model_id: str) -> ModelCard:
        """One served model (OpenAI's retrieve; a name may hold slashes), 404 if unknown."""
        return engine.model_card(model_id)

    @app.get(
        "/v1/references", response_model=ReferenceList, dependencies=guarded, responses=listing
    )
    async def list_references() -> ReferenceList:
        """The reference profiles (``--reference``) requests may name."""
        return engine.list_references()

    install_viewer(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """200 while the process runs."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=None, responses=error_responses((503,)))
    async def readyz() -> JSONResponse | dict[str, str]:
        """200 once every model is loaded and warmed up; 503 while loading or draining."""
        if engine.draining:
            return error_response(Unavailable("the server is shutting down"))
        if not engine.ready:
            return error_response(Unavailable("models are loading"))
        return {"status": "ready"}

    @app.get(
        "/metrics",
        name="metrics",  # the name request metrics leave out (a scrape is not a request)
        dependencies=guarded if settings.protect_metrics else [],
        response_class=PlainTextResponse,  # the document's type; the body is Prometheus text
        responses=error_responses((401,)) if settings.protect_metrics else None,
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of every lmscore_* metric."""
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    guarded_paths.update(
        route.path
        for route in app.routes
        if isinstance(route, APIRoute)
        and any(d.dependency is authorized for d in route.dependencies)
    )
    return app


async def _respond(
    request: Request, work: Awaitable[ScoreOutcome | ContinuationOutcome | CompareOutcome]
) -> Response:
    """The outcome as JSON with timing headers (499 if the client left meanwhile)."""
    outcome = await unless_disconnected(request, work)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(outcome.response.model_dump(mode="json"), headers=outcome.timing.headers())
