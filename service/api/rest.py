"""The REST door: FastAPI routes that convert JSON to ``schemas``, call the engine, and back."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header
from fastapi.responses import JSONResponse

from service.api.auth import KeyChecker
from service.api.errors_http import error_response, install_error_handlers
from service.api.middleware import BodyLimitMiddleware, JsonByDefaultMiddleware
from service.engine import Engine
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
    install_error_handlers(app)
    guarded = [Depends(authorized)]

    @app.post("/v1/score/text", response_model=ScoreResponse, dependencies=guarded)
    async def score_text(request: TextScoreRequest) -> ScoreResponse:
        """Score texts: per-token logprobs and aggregates (PPL, bits per byte/char)."""
        return await engine.score_text(request)

    @app.post("/v1/score/chat", response_model=ScoreResponse, dependencies=guarded)
    async def score_chat(request: ChatScoreRequest) -> ScoreResponse:
        """Score conversations rendered with the model's chat template (assistant-only by default)."""
        return await engine.score_chat(request)

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
        """200 once every model is loaded and warmed up; 503 before that."""
        if not engine.ready:
            return error_response(Unavailable("models are loading"))
        return {"status": "ready"}

    return app
