"""Awaiting several pieces of one request's work together, telling whose cancel ended a
piece, and running heavy one-off work on a thread that ends with it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
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
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # raised in the awaiting task instead
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, done, *outcome)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    result = await done
    # Its pool goes when the thread exits, just after ``fn`` returns: wait for that
    # (briefly) so that the forward thread never starts beside it.
    await asyncio.to_thread(thread.join, 5.0)
    return result


def _settle(future: asyncio.Future[T], result: T, error: BaseException | None) -> None:
    if future.done():  # its awaiter was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
