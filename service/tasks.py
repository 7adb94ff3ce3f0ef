"""Awaiting several pieces of one request's work together, and telling whose cancel
ended a piece."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def gather_or_cancel(*work: Awaitable[T]) -> list[T]:
    """The results of ``work`` in order. When one fails, or the caller is cancelled, the
    rest are cancelled and awaited before the error propagates (the first error itself, not
    an ExceptionGroup): a request's slots and counters are released when it ends, so none
    of its work may outlive it. ``asyncio.gather`` alone leaves the siblings running."""
    tasks = [asyncio.ensure_future(one) for one in work]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        unfinished = [task for task in tasks if not task.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)


def cancelled_under_us(awaited: asyncio.Future[Any]) -> bool:
    """Whether ``awaited`` was cancelled by someone else (a shutdown) while the current
    task, itself not being cancelled, was waiting on it: then the current task's
    CancelledError is that shutdown's, not its caller leaving."""
    task = asyncio.current_task()
    return awaited.cancelled() and (task is None or task.cancelling() == 0)
