"""lmscore's own REST routes: ``/v1/score/*``, the model listing and the references.

Each route converts JSON to ``schemas``, calls the engine, and converts back; the API key
is checked by the dependencies ``install`` is given.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Sequence

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response

from service.api.deps import EngineDep
from service.api.errors_http import (
    LISTING_ERRORS,
    MODEL_LOOKUP_ERRORS,
    SCORING_ERRORS,
    error_responses,
)
from service.api.json_body import json_response
from service.api.observe import CLIENT_CLOSED
from service.api.responses import unless_disconnected
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
from service.served import CompareOutcome, ContinuationOutcome, ScoreOutcome

_SCORING = error_responses(SCORING_ERRORS)
_LISTING = error_responses(LISTING_ERRORS)


def install(app: FastAPI, guarded: Sequence[Depends]) -> None:
    """Register the scoring, model and reference routes on ``app``, each behind ``guarded``."""
    deps = list(guarded)
    post = functools.partial(app.add_api_route, methods=["POST"], dependencies=deps)
    get = functools.partial(app.add_api_route, methods=["GET"], dependencies=deps)
    post("/v1/score/text", score_text, response_model=ScoreResponse, responses=_SCORING)
    post("/v1/score/chat", score_chat, response_model=ScoreResponse, responses=_SCORING)
    post(
        "/v1/score/continuations",
        score_continuations,
        response_model=ContinuationResponse,
        responses=_SCORING,
    )
    post("/v1/score/compare", score_compare, response_model=CompareResponse, responses=_SCORING)
    get("/v1/models", list_models, response_model=ModelList, responses=_LISTING)
    get(
        "/v1/models/{model_id:path}",
        retrieve_model,
        response_model=ModelCard,
        responses=error_responses(MODEL_LOOKUP_ERRORS),
    )
    get("/v1/references", list_references, response_model=ReferenceList, responses=_LISTING)


async def score_text(body: TextScoreRequest, request: Request, engine: EngineDep) -> Response:
    """Score texts: per-token logprobs and aggregates (PPL, bits per byte/char)."""
    return await _respond(request, engine.score_text(body))


async def score_chat(body: ChatScoreRequest, request: Request, engine: EngineDep) -> Response:
    """Score conversations rendered with the model's chat template (assistant-only by
    default)."""
    return await _respond(request, engine.score_chat(body))


async def score_continuations(
    body: ContinuationRequest, request: Request, engine: EngineDep
) -> Response:
    """Score candidate continuations of one context (each log p(continuation |
    context), greedy or not); the context is computed once."""
    return await _respond(request, engine.score_continuations(body))


async def score_compare(body: CompareRequest, request: Request, engine: EngineDep) -> Response:
    """Score texts under two models: both models' scores, the bits-per-byte ratio, and
    with token_level (identical tokenizers) KL divergence, top-1 agreement and
    binoculars."""
    return await _respond(request, engine.compare_models(body))


async def list_models(engine: EngineDep) -> ModelList:
    """The served models."""
    return engine.list_models()


async def retrieve_model(model_id: str, engine: EngineDep) -> ModelCard:
    """One served model (OpenAI's retrieve; a name may hold slashes), 404 if unknown."""
    return engine.model_card(model_id)


async def list_references(engine: EngineDep) -> ReferenceList:
    """The reference profiles (``--reference``) requests may name."""
    return engine.list_references()


async def _respond(
    request: Request, work: Awaitable[ScoreOutcome | ContinuationOutcome | CompareOutcome]
) -> Response:
    """The outcome as JSON with timing headers (499 if the client left meanwhile)."""
    outcome = await unless_disconnected(request, work)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    return await json_response(outcome.response, outcome.timing.headers())
