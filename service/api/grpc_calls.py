"""How a gRPC call of the Scorer ends: our errors as status codes with the contract's
type, field and retry-after as trailing metadata, bugs as INTERNAL (logged), deadlines
and cancels told apart, and every call recorded once in the core's request metrics
under the endpoint label REST uses for the same operation.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import TypeVar

import grpc

from service.errors import InternalError, LMScoreError, Timeout, grpc_code_name
from service.request_metrics import CANCELLED, RequestRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINTS = {
    "ScoreText": "score_text",
    "ScoreChat": "score_chat",
    "ScoreContinuations": "score_continuations",
    "CompareModels": "score_compare",
    "ListModels": "list_models",
    "GetModel": "retrieve_model",  # REST's route names
    "ListReferences": "list_references",
    "ScoreTextStream": "score_text_stream",
}


async def observe(method: str, context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Await ``call``; turn our errors into statuses; record the request in the core."""
    record = RequestRecord(ENDPOINTS[method], "grpc")
    try:
        response = await call
    except LMScoreError as error:
        record.finish(grpc_code_name(error), error)
        await abort(context, error)
        raise  # not reached: abort raises
    except asyncio.CancelledError:
        finish_cancelled(record, context)
        raise
    except Exception as exc:
        if isinstance(exc, grpc.aio.AbortError):
            raise
        await internal(method, record, context, exc)
        raise  # not reached: abort raises
    record.finish("OK")
    return response


async def internal(
    method: str,
    record: RequestRecord,
    context: grpc.aio.ServicerContext,
    exc: Exception,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    """A bug of ours: logged with its traceback, recorded, and answered INTERNAL (not
    UNKNOWN with nothing logged)."""
    log.error("internal error in %s", method, exc_info=exc)
    internal = InternalError(f"internal error: {type(exc).__name__}")
    record.finish("INTERNAL", internal)
    await abort(context, internal, extra)


# The server's deadline starts when the call arrives, the client's when it was sent: the
# client gives up first and cancels, and the server sees that a little before its own
# deadline. A cancel this close to the deadline is the deadline.
DEADLINE_SKEW_S = 0.5


async def before_deadline(next_up: Awaitable[T], context: grpc.aio.ServicerContext) -> T:
    """Await what the client paces (a stream's next request) only until the call's
    deadline: gRPC cancels the handler then, but not reliably enough to wait on (Timeout).
    ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` swallows a cancel
    that lands as its awaitable finishes, and gRPC's cancel of the handler would be lost."""
    try:
        async with asyncio.timeout(context.time_remaining()):  # None: no deadline
            return await next_up
    except TimeoutError:
        raise Timeout("the call's deadline passed") from None


def deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SKEW_S


def finish_cancelled(record: RequestRecord, context: grpc.aio.ServicerContext) -> None:
    """Record a handler gRPC cancelled: its deadline passed (a timeout, as the unary calls
    that end on the engine's own deadline record it), or the client cancelled the call."""
    if deadline_passed(context):
        timeout = Timeout("the call's deadline passed")
        record.finish(grpc_code_name(timeout), timeout)
    else:
        record.finish("CANCELLED", CANCELLED)


async def abort(
    context: grpc.aio.ServicerContext,
    error: LMScoreError,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    """End the call with the error's status code, and its contract type and field as
    trailing metadata (``lmscore-error-type``, ``lmscore-param``: REST's ``type`` and
    ``param``, machine-readable), ``retry-after`` when there is one, then ``extra``."""
    trailers = [("lmscore-error-type", error.type), *extra]
    if error.param:
        trailers.append(("lmscore-param", error.param))
    if error.retry_after_s is not None:
        trailers.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    context.set_trailing_metadata(tuple(trailers))
    message = (
        f"{error.param}: {error.message}"
        if error.param and error.param not in error.message
        else error.message
    )
    await context.abort(grpc.StatusCode[grpc_code_name(error)], message)
