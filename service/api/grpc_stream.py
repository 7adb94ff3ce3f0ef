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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.errors import Overloaded

T = TypeVar("T")


class StreamBacklog:
    """The attempts of one stream's requests: how many are under way (not waiting on a
    refusal), and the refused ones waiting for room, oldest first.

    A refused request waits only while another attempt is under way; each attempt that
    ends other than by waiting (answered, failed, or refused with nothing else under way)
    lets the oldest waiting request try again. One finished request wakes one waiting
    request, not all of them: a wave of retries would tokenize every waiting request again
    only to refuse most of them.
    """

    def __init__(self) -> None:
        self._under_way = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def paced(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it is not refused as overloaded, or is refused with none of
        this stream's other requests under way to wait for (then its ``Overloaded``)."""
        while True:
            self._under_way += 1
            waits = False
            try:
                return await attempt()
            except Overloaded:
                waits = self._under_way > 1
                if not waits:
                    raise
            finally:
                self._under_way -= 1
                if not waits:
                    self._wake_oldest()
            await self._room()

    async def _room(self) -> None:
        """Until an attempt of this stream ends and this is the oldest waiting request."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_oldest()  # woken, then cancelled: the turn passes on
            elif waiter in self._waiting:  # a wake may have passed over it already
                self._waiting.remove(waiter)
            raise

    def _wake_oldest(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
