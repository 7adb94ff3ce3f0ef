"""What the REST routes depend on: the engine the app serves, and the API-key check.

Routes live in plain modules (one router each) and reach the engine through
``EngineDep``; ``create_app`` puts the engine and the key checker on ``app.state``.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request

from service.api.auth import KeyChecker
from service.engine import Engine

# Dependencies are async on purpose: a plain function would run in the thread pool, one
# thread hop per request.


async def engine_of(request: Request) -> Engine:
    """The engine the application was created over."""
    return cast(Engine, request.app.state.engine)


async def authorized(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Unauthorized (401) unless the bearer key is one of the configured keys."""
    cast(KeyChecker, request.app.state.keys).check(authorization)


EngineDep = Annotated[Engine, Depends(engine_of)]
GUARDED = [Depends(authorized)]
