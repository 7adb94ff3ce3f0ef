"""The scheduler for backends that batch by themselves (vLLM): windows go straight to the
backend, while admission control, deadlines, cancellation and metrics stay ours."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager

from service import metrics
from service.backends.base import ForwardItem, ForwardResult, SelfBatchingBackend
from service.batching.pending import ScoredItem, Timing
from service.batching.reservations import HeldRoom
from service.errors import Overloaded, Timeout, Unavailable
from service.tasks import cancelled_under_us


class PassThroughScheduler:
    """Admits up to ``max_queue`` windows in flight and awaits the backend directly."""

    def __init__(self, backend: SelfBatchingBackend, model: str, *, max_queue: int) -> None:
        self._backend = backend
        self._model = model
        self._max_queue = max_queue
        self._inflight = 0
        self._held = HeldRoom()  # room promised to admitted requests not yet submitted
        self._closed = False
        self._work: set[asyncio.Task[list[ForwardResult]]] = set()  # the backend's calls
        self._depth = metrics.QUEUE_DEPTH.labels(model=model)

    @property
    def backend(self) -> SelfBatchingBackend:
        return self._backend

    @property
    def queue_depth(self) -> int:
        return self._inflight

    @property
    def capacity(self) -> int:
        return self._max_queue

    async def warmup(self) -> None:
        await self._backend.warmup()

    def retry_after_s(self) -> float:
        return 1.0

    def reserve(self, windows: int) -> AbstractContextManager[None]:
        """Hold room for ``windows`` windows until this task submits them or the block
        ends; Overloaded when the windows in flight, with the room other requests hold,
        leave none. (Everything here runs on the event loop: no lock.)"""
        return self._held.holding(windows, self._admit)

    def _admit(self, count: int) -> None:
        # A request larger than the whole queue is still admitted when nothing is in flight.
        waiting = self._inflight + self._held.windows
        if waiting and waiting + count > self._max_queue:
            raise self._overloaded()

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"model {self._model!r} has {self._inflight} windows in flight and "
            f"{self._held.windows} held for requests being tokenized",
            retry_after_s=self.retry_after_s(),
        )

    async def submit(
        self, items: Sequence[ForwardItem], deadline: float | None = None
    ) -> list[ScoredItem]:
        """Score ``items`` in the backend; cancelling the caller cancels (aborts) them."""
        if self._closed:
            raise Unavailable("the model is shutting down")
        if not items:
            return []
        self._held.release_current()  # this request's hold becomes its windows in flight
        self._admit(len(items))
        self._inflight += len(items)
        self._depth.set(self._inflight)
        started = time.monotonic()
        timeout = None if deadline is None else max(0.0, deadline - started)
        # A task of its own, so that close() can stop it: cancelling it aborts its windows
        # in the backend. Cancelling the caller (or its deadline) cancels it too.
        work = asyncio.ensure_future(self._backend.score(list(items)))
        self._work.add(work)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that lands just as the backend finishes, and the caller would go on.
            async with asyncio.timeout(timeout):
                outputs = await work
        except TimeoutError as exc:
            raise Timeout("the request's deadline passed in the backend") from exc
        except asyncio.CancelledError:
            if cancelled_under_us(work):
                raise Unavailable("the model is shutting down") from None  # close() ended it
            raise
        finally:
            self._work.discard(work)
            self._inflight -= len(items)
            self._depth.set(self._inflight)
        elapsed = time.monotonic() - started
        metrics.INFERENCE_DURATION.labels(model=self._model).observe(elapsed)
        metrics.TOKENS_SCORED.labels(model=self._model).inc(sum(i.num_scored for i in items))
        return [ScoredItem(output, Timing(0.0, elapsed, batch=-1)) for output in outputs]

    async def close(self, wait_s: float = 30.0) -> None:
        """Refuse new work; give the work in flight ``wait_s`` seconds to finish, then stop
        what is left (aborted in the backend; its callers get Unavailable); then stop the
        backend. (Stopping vLLM's engine under work in flight left those calls waiting
        for good.)"""
        self._closed = True
        if self._work:
            _, unfinished = await asyncio.wait(set(self._work), timeout=wait_s)
            for work in unfinished:
                work.cancel()
            if unfinished:  # their aborts reach the backend before it stops
                await asyncio.wait(unfinished, timeout=10.0)
        await asyncio.to_thread(self._backend.close)
