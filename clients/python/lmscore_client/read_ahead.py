"""The next item of a blocking iterator (a file, a pipe), read off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


async def next_off_loop(items: Iterator[T]) -> T | None:
    """``next(items, None)`` on a daemon thread of its own: requests in flight and their
    answers go on while a pipe waits for its producer, and a read still waiting when the
    run ends (a producer that never closes) is left behind without holding up the exit,
    which the event loop's executor threads would. Call one at a time per iterator."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T | None] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.done():  # the caller stopped waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def read() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = next(items, None)
        except BaseException as exc:  # handed to the caller, raised there
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=read, name="lmscore-read-input", daemon=True).start()
    return await future
