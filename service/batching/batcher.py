"""The dynamic batcher: merges windows from any number of callers into forward passes.

One per model. Callers ``submit`` windows and await their futures; a single task takes
batches from the queue and runs each forward on the model's worker thread, so the event
loop keeps accepting. A batch closes when it is full (``max_batch_tokens`` counted as
longest x count, or ``max_batch_size``) or ``max_wait_ms`` after its oldest item arrived.
Batches are built around the oldest item from the items nearest to it in length (less
padding, no starvation). Items whose caller is gone or whose deadline passed are dropped
before they cost a forward pass. A failing batch fails only its own items.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from service import metrics
from service.backends.base import Backend, ForwardItem
from service.batching.pending import PendingItem, ScoredItem, Timing
from service.errors import InternalError, Overloaded, Timeout, Unavailable

log = logging.getLogger(__name__)


class DynamicBatcher:
    """Queue + batching loop in front of one backend."""

    def __init__(
        self,
        backend: Backend,
        model: str,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
    ) -> None:
        self._backend = backend
        self._model = model
        self._max_tokens = max_batch_tokens
        self._max_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._pending: list[PendingItem] = []
        self._wakeup = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{model}")
        self._counter = itertools.count()
        self._batches = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._recent_batch_s = 0.05
        self._depth = metrics.QUEUE_DEPTH.labels(model=model)

    # ---- callers ---------------------------------------------------------------------
    async def submit(
        self, items: Sequence[ForwardItem], deadline: float | None = None
    ) -> list[ScoredItem]:
        """Score ``items`` (results in order). Raises Overloaded when the queue is full.

        Cancelling the awaiting task cancels its items, which the batcher then drops.
        """
        if self._closed:
            raise Unavailable("the model is shutting down")
        self._admit(len(items))
        self._ensure_running()
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = [
            PendingItem(item, loop.create_future(), now, deadline, next(self._counter))
            for item in items
        ]
        self._pending.extend(pending)
        self._depth.set(len(self._pending))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            for p in pending:
                if not p.future.done():
                    p.future.cancel()

    def _admit(self, count: int) -> None:
        # A request larger than the whole queue is still admitted into an empty queue.
        waiting = len(self._pending)
        if waiting and waiting + count > self._max_queue:
            raise Overloaded(
                f"the queue of model {self._model!r} is full ({waiting} items waiting)",
                retry_after_s=self.retry_after_s(),
            )

    def retry_after_s(self) -> float:
        """A guess of when the queue will have room: the batches ahead of a new item."""
        batches_ahead = len(self._pending) / max(1, self._max_size) + 1
        return max(1.0, batches_ahead * self._recent_batch_s)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # ---- lifecycle -------------------------------------------------------------------
    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self._model}"
            )

    async def close(self) -> None:
        """Stop taking batches; fail what still waits; release the worker thread."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(Unavailable("the model is shutting down"))
        self._pending.clear()
        self._depth.set(0)
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._execute(batch)
            except asyncio.CancelledError:  # close(): the batch in flight must not hang
                self._fail(batch, Unavailable("the model is shutting down"))
                raise
            except Exception as exc:  # never let one batch kill the loop
                log.exception("batch of %d items failed", len(batch))
                self._fail(batch, InternalError(f"inference failed: {type(exc).__name__}"))

    @staticmethod
    def _fail(batch: list[PendingItem], error: Exception) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    async def _next_batch(self) -> list[PendingItem]:
        while True:
            self._drop_gone()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            oldest = min(p.enqueued_at for p in self._pending)
            remaining = oldest + self._max_wait_s - time.monotonic()
            if remaining > 0 and not self._full():
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                continue
            return self._take()

    def _full(self) -> bool:
        """Whether the waiting items already fill a batch."""
        if len(self._pending) >= self._max_size:
            return True
        longest = max(p.length for p in self._pending)
        return longest * len(self._pending) >= self._max_tokens

    def _take(self) -> list[PendingItem]:
        """The oldest item plus its nearest neighbours in length, within the budget."""
        anchor = min(self._pending, key=lambda p: (p.enqueued_at, p.sequence))
        by_closeness = sorted(
            self._pending, key=lambda p: (abs(p.length - anchor.length), p.sequence)
        )
        batch: list[PendingItem] = []
        longest = 0
        for candidate in by_closeness:
            width = max(longest, candidate.length)
            if batch and (
                width * (len(batch) + 1) > self._max_tokens or len(batch) >= self._max_size
            ):
                continue
            batch.append(candidate)
            longest = width
        chosen = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in chosen]
        self._depth.set(len(self._pending))
        return batch

    def _drop_gone(self) -> None:
        """Drop items nobody waits for any more, before they cost a forward pass."""
        now = time.monotonic()
        keep: list[PendingItem] = []
        for p in self._pending:
            if p.abandoned():
                metrics.ITEMS_DROPPED.labels(model=self._model, reason="cancelled").inc()
            elif p.expired(now):
                metrics.ITEMS_DROPPED.labels(model=self._model, reason="expired").inc()
                p.future.set_exception(Timeout("the request's deadline passed while queued"))
            else:
                keep.append(p)
        if len(keep) != len(self._pending):
            self._pending = keep
            self._depth.set(len(keep))

    async def _execute(self, batch: list[PendingItem]) -> None:
        started = time.monotonic()
        items = [p.item for p in batch]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._worker, self._backend.forward, items)
        except Exception as exc:
            log.exception("forward pass of %d items failed", len(batch))
            error = InternalError(f"inference failed: {type(exc).__name__}: {exc}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        elapsed = time.monotonic() - started
        self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * elapsed
        self._record(batch, started, elapsed)
        number = next(self._batches)
        for p, output in zip(batch, outputs, strict=True):
            if not p.future.done():
                timing = Timing(started - p.enqueued_at, elapsed, number)
                p.future.set_result(ScoredItem(output, timing))

    def _record(self, batch: list[PendingItem], started: float, elapsed: float) -> None:
        model = self._model
        lengths = [p.length for p in batch]
        padded = max(lengths) * len(lengths)
        metrics.INFERENCE_DURATION.labels(model=model).observe(elapsed)
        metrics.BATCH_SIZE.labels(model=model).observe(len(batch))
        metrics.BATCH_TOKENS.labels(model=model).observe(padded)
        metrics.PADDING_RATIO.labels(model=model).observe(1.0 - sum(lengths) / padded)
        metrics.TOKENS_SCORED.labels(model=model).inc(sum(p.item.num_scored for p in batch))
        queue = metrics.QUEUE_DURATION.labels(model=model)
        for p in batch:
            queue.observe(started - p.enqueued_at)
        log.debug(
            "batch model=%s size=%d tokens=%d padded=%d forward_ms=%.1f",
            model,
            len(batch),
            sum(lengths),
            padded,
            elapsed * 1000,
        )
