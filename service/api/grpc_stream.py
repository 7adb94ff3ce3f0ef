"""Pacing a gRPC stream by its own backlog: a stream that fills the model's queue waits.

A stream keeps up to ``STREAM_WINDOW`` requests in flight. With requests of many texts
each, that alone can exceed ``--max-queue`` (64 requests x 32 texts > 1024 items), and a
refusal ends the whole stream: a corpus streamed through the server would stop on its own
backlog. So a request refused as overloaded while other requests of the same stream are
queued or running waits for one of them to finish, then tries again. A refusal with nothing
of the stream's own in flight is other clients' load, and ends the stream as it would end
a unary call (RESOURCE_EXHAUSTED with retry-after).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.errors import Overloaded

T = TypeVar("T")


class StreamBacklog:
    """The attempts of one stream's requests that are under way (not waiting on a refusal).

    A refused request waits only on attempts under way when it was refused, and stops
    being one itself while it waits; so no two requests wait on each other, and the last
    one under way, if refused, fails rather than waits.
    """

    def __init__(self) -> None:
        self._under_way: set[asyncio.Task[object]] = set()

    async def paced(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it is not refused as overloaded, or is refused with none of
        this stream's other requests under way to wait for (then its ``Overloaded``)."""
        me = asyncio.current_task()
        assert me is not None, "paced() runs inside a task"
        while True:
            self._under_way.add(me)
            try:
                return await attempt()
            except Overloaded:
                ahead = {task for task in self._under_way if task is not me and not task.done()}
                if not ahead:
                    raise
            finally:
                self._under_way.discard(me)
            await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
