"""lmscore's engine inside the caller's process: the one public entry point for integrations
that embed it on purpose (the Ray in-process scorer), with no server to run.

It is a door like REST and gRPC, without a socket: requests and answers are the REST JSON
bodies, and failures come back as the contract's error body with the HTTP status REST would
send, so an embedding client handles them exactly as it handles a server's. The engine runs
on its own event loop in a background thread; ``request`` may be awaited from any other
event loop and ``request_blocking`` called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from service.engine import Engine
from service.errors import (
    InternalError,
    LMScoreError,
    NotFound,
    from_validation_errors,
    http_status,
)
from service.models import parse_model_args
from service.schemas import (
    ChatScoreRequest,
    CompareRequest,
    ContinuationRequest,
    TextScoreRequest,
)
from service.served import CompareOutcome, ContinuationOutcome, ScoreOutcome
from service.settings import Settings

log = logging.getLogger(__name__)

Outcome = ScoreOutcome | ContinuationOutcome | CompareOutcome


@dataclass(frozen=True)
class Answer:
    """What REST would have answered: the status, the JSON body (a response, or the
    contract's ``{"error": ...}``) and the seconds of a Retry-After, if any."""

    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None


@dataclass(frozen=True)
class _Route:
    schema: type[BaseModel]
    handler: Callable[[Engine, Any], Awaitable[Outcome]]


_ROUTES: dict[str, _Route] = {
    "/v1/score/text": _Route(TextScoreRequest, lambda e, r: e.score_text(r)),
    "/v1/score/chat": _Route(ChatScoreRequest, lambda e, r: e.score_chat(r)),
    "/v1/score/continuations": _Route(ContinuationRequest, lambda e, r: e.score_continuations(r)),
    "/v1/score/compare": _Route(CompareRequest, lambda e, r: e.compare_models(r)),
}


def _error_answer(error: LMScoreError) -> Answer:
    return Answer(http_status(error), dict(error.to_dict()), error.retry_after_s)


class EmbeddedEngine:
    """The engine with its models loaded, in this process. Start with ``start``; ``close``
    when done (also a context manager)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lmscore-embedded", daemon=True
        )
        self._engine: Engine | None = None

    @classmethod
    def start(cls, settings: Settings | None = None, **fields: Any) -> EmbeddedEngine:
        """Load and warm up the models ``settings`` (or ``Settings(**fields)``) name; returns
        once they take work. Raises what loading raised."""
        embedded = cls(settings if settings is not None else Settings(**fields))
        embedded._thread.start()
        try:
            embedded._run(embedded._load()).result()
        except BaseException:
            embedded.close()
            raise
        return embedded

    async def _load(self) -> None:
        specs = parse_model_args(self.settings.model)
        for spec in specs:  # refuse a bad per-model option before loading anything
            self.settings.for_model(dict(spec.options))
        engine = Engine(self.settings)
        self._engine = engine
        await engine.load(specs)

    def _run(self, work: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        async def wrapped() -> Any:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop)

    async def _answer(self, method: Literal["GET", "POST"], path: str, body: Any) -> Answer:
        engine = self._engine
        assert engine is not None, "EmbeddedEngine.start() loads the engine"
        if method == "GET" and path == "/v1/models":
            return Answer(200, engine.list_models().model_dump(mode="json"))
        route = _ROUTES.get(path) if method == "POST" else None
        if route is None:
            return _error_answer(NotFound(f"no route {method} {path}"))
        try:
            request = route.schema.model_validate(body)
            outcome = await route.handler(engine, request)
        except ValidationError as exc:
            return _error_answer(from_validation_errors(exc.errors()))
        except LMScoreError as exc:
            return _error_answer(exc)
        except Exception as exc:  # as REST's last handler: a 500, logged, the loop lives on
            log.exception("internal error")
            return _error_answer(InternalError(f"internal error: {type(exc).__name__}"))
        return Answer(200, outcome.response.model_dump(mode="json"))

    async def request(self, method: Literal["GET", "POST"], path: str, body: Any = None) -> Answer:
        """Answer one request from any event loop (cancelling the await cancels the work)."""
        return await asyncio.wrap_future(self._run(self._answer(method, path, body)))

    def request_blocking(
        self, method: Literal["GET", "POST"], path: str, body: Any = None
    ) -> Answer:
        """Answer one request from a thread with no running event loop."""
        answer: Answer = self._run(self._answer(method, path, body)).result()
        return answer

    def close(self) -> None:
        """Fail whatever still waits, release the models and stop the loop thread."""
        if self._thread.is_alive():
            if self._engine is not None:
                self._run(self._engine.close()).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
