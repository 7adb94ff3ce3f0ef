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
    """Unauthorized (401) unless the request's one bearer key is a configured key.
    ``authorization`` is declared for the OpenAPI document; every value sent is checked."""
    cast(KeyChecker, request.app.state.keys).check_all(request.headers.getlist("authorization"))


EngineDep = Annotated[Engine, Depends(engine_of)]
GUARDED = [Depends(authorized)]
