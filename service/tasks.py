"""Awaiting several pieces of one request's work together, telling whose cancel ended a
piece, and running heavy one-off work on a thread that ends with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
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


async def on_own_thread(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a new thread named ``name`` that has ended by the time this returns.

    For one-off model work (loading, converting, warming up) next to a forward thread
    that runs for the server's life. torch's OpenMP runtime (libgomp) keeps a pool of
    workers for every thread that ever ran parallel work; once more of them live than
    there are CPUs, it stops spinning between parallel regions and parks workers on
    futexes instead, and a lone short forward pass took 69 ms instead of 38 on two
    cores (``bench/NOTES.md``). A pooled executor thread would keep its pool for good;
    this thread takes its pool with it."""
    job: Future[T] = Future()
    thread = threading.Thread(target=fulfil, args=(job, lambda: fn(*args)), name=name, daemon=True)
    thread.start()
    result = await asyncio.wrap_future(job)
    # Its pool goes when the thread exits, just after ``fn`` returns: wait for that
    # (briefly) so that the forward thread never starts beside it.
    await asyncio.to_thread(thread.join, 5.0)
    return result


def fulfil(job: Future[T], fn: Callable[[], T]) -> None:
    """Run ``fn`` for ``job`` (unless it was cancelled first): its result or its error, which
    the waiter then raises."""
    if not job.set_running_or_notify_cancel():
        return
    try:
        job.set_result(fn())
    except BaseException as exc:  # raised where the job is awaited
        job.set_exception(exc)
