"""The dynamic batcher: merges windows from any number of callers into forward passes.

One per model. Callers ``submit`` windows and await their futures. A worker thread takes
its own batches from the queue and runs them, so it never waits for the event loop while
work is queued: tokenizing, assembling results and encoding responses on the loop overlap
the next forward pass. A batch closes when it is full (``max_batch_tokens`` counted by the
backend's layout, see ``cost``; or ``max_batch_size``) or ``max_wait_ms`` after its oldest
item arrived, and, right after a pass, once the callers that pass answered have sent their
next requests or a share of a pass has gone by (see ``rejoin``). Items whose caller is gone
or whose deadline passed are dropped before they cost a forward pass. A failing batch runs
again in halves, so the item that fails fails alone.

Order is fair between requests, not first come first served: a request of a thousand texts
must not make a one-text request that arrives after it wait for all of them. Each request's
windows are dealt into turns of half a batch (half of ``max_batch_tokens`` and of
``max_batch_size``), from the turn after the one being served when it arrives: a request
of up to half a batch is all in one turn, a larger one spreads over as many turns as it
fills. Batches take the earliest turn first, and within a turn the earliest arrival, so
small requests are served in arrival order, as before, while one arriving behind a large
request runs in the batch after the one in flight, next to half a batch of the large one
(which thus never starves). Ragged batches take items in that order; padded ones are built
around the first item in that order from the items nearest to it in length (less padding,
no starvation).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from service import metrics
from service.backends.base import BatchedBackend, ForwardItem
from service.batching.cost import BatchCost
from service.batching.pending import (
    PendingItem,
    RequestWindows,
    ScoredItem,
    deliver,
    fail,
)
from service.batching.rejoin import RejoinWait
from service.batching.reservations import HeldRoom
from service.errors import InternalError, Overloaded, Timeout, Unavailable
from service.tasks import on_own_thread

log = logging.getLogger(__name__)


@dataclass
class _Recovery:
    """How a failed batch's re-runs in halves are going: the extra passes left while no
    part has passed, and whether one has (then the model works: no more cap)."""

    retries: int
    passed: bool = False

    def may_retry(self) -> bool:
        return self.passed or self.retries > 0


class DynamicBatcher:
    """Queue + batching worker thread in front of one batched backend."""

    def __init__(
        self,
        backend: BatchedBackend,
        model: str,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        rejoin_wait: float = 0.0,
    ) -> None:
        self._backend = backend
        self._model = model
        self._cost = BatchCost(backend.layout)
        self._max_tokens = max_batch_tokens
        self._max_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._pending: list[PendingItem] = []
        self._held = HeldRoom()  # room promised to admitted requests not yet submitted
        self._changed = threading.Condition()  # guards _pending, _held and _closed
        self._forwarding = threading.Lock()  # one forward (or warm-up) at a time
        self._counter = itertools.count()
        self._batches = itertools.count()
        self._thread: threading.Thread | None = None
        self._running: list[PendingItem] = []  # the batch in the forward pass now
        self._turn = 0  # the turn of fair order the last batch served (see the docstring)
        self._turn_tokens = max(1, max_batch_tokens // 2)
        self._turn_size = max(1, max_batch_size // 2)
        self._closed = False
        self._recent_batch_s = 0.05
        self._rejoin = RejoinWait(rejoin_wait)
        self._depth = metrics.QUEUE_DEPTH.labels(model=model)

    @property
    def backend(self) -> BatchedBackend:
        return self._backend

    # ---- callers (event loop) --------------------------------------------------------
    async def submit(
        self, items: Sequence[ForwardItem], deadline: float | None = None
    ) -> list[ScoredItem]:
        """Score ``items`` (results in order). Raises Overloaded when the queue is full.

        Cancelling the awaiting task cancels its items, which the worker then drops.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        request = RequestWindows(len(items))
        pending = [
            PendingItem(
                item, loop.create_future(), now, deadline, next(self._counter), request=request
            )
            for item in items
        ]
        with self._changed:
            if self._closed:
                raise Unavailable("the model is shutting down")
            self._held.release_current()  # this request's hold becomes its queued windows
            self._admit(len(items))
            self._deal_turns(pending)
            self._pending.extend(pending)
            self._rejoin.request_arrived()
            self._depth.set(len(self._pending))
            self._ensure_worker()
            self._changed.notify()
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            self._withdraw(pending)

    def _deal_turns(self, pending: list[PendingItem]) -> None:
        """One request's items into turns of half a batch (tokens and sequences), from the
        turn after the one being served."""
        turn, tokens, count = self._turn + 1, 0, 0
        for p in pending:
            if count and (tokens + p.length > self._turn_tokens or count >= self._turn_size):
                turn, tokens, count = turn + 1, 0, 0
            p.turn = turn
            tokens, count = tokens + p.length, count + 1

    def _withdraw(self, pending: list[PendingItem]) -> None:
        """A caller stopped waiting (timeout, disconnect, a sibling failed): its queued
        items leave the queue now, not when the batch in flight ends."""
        for p in pending:
            if not p.future.done():
                p.future.cancel()
        if any(p.future.cancelled() for p in pending):  # gather cancels them on the way out
            with self._changed:
                self._drop_gone()

    def reserve(self, windows: int) -> AbstractContextManager[None]:
        """Hold room for ``windows`` windows until this task submits them or the block
        ends; Overloaded when the queue, with the room other requests hold, has none."""
        return self._held.holding(windows, self._admit, self._changed)

    def _admit(self, count: int) -> None:
        # A request larger than the whole queue is still admitted into an empty queue.
        self._drop_gone()  # work nobody waits for must not fill the queue
        waiting = self._waiting
        if waiting and waiting + count > self._max_queue:
            raise self._overloaded()

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"the queue of model {self._model!r} is full ({len(self._pending)} windows "
            f"waiting, {self._held.windows} held for requests being tokenized)",
            retry_after_s=self.retry_after_s(),
        )

    def retry_after_s(self) -> float:
        """A guess of when the queue will have room: the batches ahead of a new item."""
        batches_ahead = self._waiting / max(1, self._max_size) + 1
        return max(1.0, batches_ahead * self._recent_batch_s)

    @property
    def _waiting(self) -> int:
        """Windows queued, and those held for admitted requests still being tokenized."""
        return len(self._pending) + self._held.windows

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def capacity(self) -> int:
        return self._max_queue

    # ---- lifecycle -------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name=f"forward-{self._model}", daemon=True
            )
            self._thread.start()

    async def warmup(self) -> None:
        """The backend's warm-up forward, never beside a real batch, on a thread that ends
        with it (see ``on_own_thread``: no idle math-library pool stays beside the
        forward thread)."""

        def run() -> None:
            with self._forwarding:
                self._backend.warmup()

        await on_own_thread(f"warmup-{self._model}", run)

    async def close(self, wait_s: float = 30.0) -> None:
        """Stop taking batches; fail what still waits (and the batch in flight); release
        the backend once the worker is out of it, waiting at most ``wait_s`` for that (the
        worker is a daemon thread: a process that stops sooner does not wait for it)."""
        with self._changed:
            self._closed = True
            waiting, self._pending = self._pending + self._running, []
            self._depth.set(0)
            self._changed.notify_all()
        # The batch in flight cannot be interrupted; its callers are told now, and its
        # results are dropped when it ends.
        fail(waiting, Unavailable("the model is shutting down"))
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, wait_s)
            if thread.is_alive():
                return  # still in a forward pass: its backend cannot be released under it
        self._backend.close()

    # ---- the worker thread -----------------------------------------------------------
    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)
            with self._changed:
                self._running = []

    def _next_batch(self) -> list[PendingItem] | None:
        """Block until a batch is due (full, or its oldest item waited ``max_wait_ms`` and
        the wait for the last pass's callers is over, see ``rejoin``); None once closed."""
        with self._changed:
            while not self._closed:
                self._drop_gone()
                if not self._pending:
                    self._changed.wait()
                    continue
                now = time.monotonic()
                oldest = min(p.enqueued_at for p in self._pending)
                remaining = max(
                    oldest + self._max_wait_s - now,
                    self._rejoin.remaining_s(self._recent_batch_s, now),
                )
                if remaining > 0 and not self._full():
                    self._changed.wait(remaining)
                    continue
                self._running = self._take()
                return self._running
        return None

    def _full(self) -> bool:
        """Whether the waiting items already fill a batch."""
        if len(self._pending) >= self._max_size:
            return True
        return self._cost.tokens([p.length for p in self._pending]) >= self._max_tokens

    def _take(self) -> list[PendingItem]:
        """The first item in fair order plus, within the budget, its nearest neighbours in
        length (padded layouts) or the items next in fair order (ragged layouts)."""
        anchor = min(self._pending, key=PendingItem.fair_order)
        self._turn = max(self._turn, anchor.turn)
        if self._cost.groups_by_length:
            order = sorted(
                self._pending, key=lambda p: (abs(p.length - anchor.length), *p.fair_order())
            )
        else:
            order = sorted(self._pending, key=PendingItem.fair_order)
        batch: list[PendingItem] = []
        total = longest = 0
        for candidate in order:
            if len(batch) >= self._max_size:
                break
            widest = max(longest, candidate.length)
            cost = self._cost.tokens_of(len(batch) + 1, total + candidate.length, widest)
            if batch and cost > self._max_tokens:
                continue
            batch.append(candidate)
            total, longest = total + candidate.length, widest
        chosen = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in chosen]
        self._depth.set(len(self._pending))
        return batch

    def _drop_gone(self) -> None:
        """Drop items nobody waits for any more, before they cost a forward pass."""
        now = time.monotonic()
        keep: list[PendingItem] = []
        expired: list[PendingItem] = []
        for p in self._pending:
            # Past its deadline first: a caller timing out at that deadline has usually
            # cancelled its wait already, and that is an expiry, not a cancellation.
            if p.expired(now):
                metrics.ITEMS_DROPPED.labels(model=self._model, reason="expired").inc()
                expired.append(p)
            elif p.abandoned():
                metrics.ITEMS_DROPPED.labels(model=self._model, reason="cancelled").inc()
            else:
                keep.append(p)
        if len(keep) != len(self._pending):
            self._pending = keep
            self._depth.set(len(keep))
        fail(expired, Timeout("the request's deadline passed while queued"))

    def _execute(self, batch: list[PendingItem], recovery: _Recovery | None = None) -> None:
        """Run ``batch`` and deliver its results. When the forward pass fails, its halves
        run again, down to single items: an item the model cannot take (a bad input)
        then fails alone, and the requests that shared its batch are still answered.

        Until some part of the batch has passed, splitting is capped at what isolating
        one item takes, so a model that fails every pass fails fast (each half still runs
        once); once one has passed the model works and the failures are the items', so
        every failing part is split down to its bad items (however many there are)."""
        if recovery is None:
            recovery = _Recovery(retries=2 * math.ceil(math.log2(max(2, len(batch)))))
        started = time.monotonic()
        try:
            with self._forwarding:
                outputs = self._backend.forward([p.item for p in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"{len(outputs)} results for {len(batch)} windows")
        except Exception as exc:  # a failing batch fails its own items, nothing else
            error = InternalError(f"inference failed: {type(exc).__name__}: {exc}")
            if len(batch) == 1 or not recovery.may_retry() or self._closed:
                log.exception("forward pass of %d items failed", len(batch))
                self._pass_ended(batch)
                fail(batch, error)
                return
            log.warning("forward pass of %d items failed (%r); retrying in halves",
                        len(batch), exc)  # fmt: skip
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                # Each half runs at least once, even with the budget spent on the other
                # (its bad items may be all in the first half); only the splitting stops.
                if not (waiting := self._still_waited_for(part)):
                    continue
                if self._closed:
                    fail(waiting, error)
                else:
                    recovery.retries -= 1
                    self._execute(waiting, recovery)
            return
        recovery.passed = True
        elapsed = time.monotonic() - started
        self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * elapsed
        self._record(batch, started, elapsed)
        self._pass_ended(batch)
        deliver(batch, outputs, started, elapsed, next(self._batches))

    def _pass_ended(self, batch: list[PendingItem]) -> None:
        """Tell the rejoin wait which requests this pass finished, before their callers
        are answered (an answer may bring the next request back at once)."""
        with self._changed:
            finished = sum(p.request.one_done() for p in batch)
            self._rejoin.pass_ended(finished, time.monotonic())

    def _still_waited_for(self, items: list[PendingItem]) -> list[PendingItem]:
        """Items whose callers still wait; those past their deadline fail with a timeout."""
        now = time.monotonic()
        fail([p for p in items if p.expired(now)], Timeout("the request's deadline passed"))
        return [p for p in items if not p.abandoned() and not p.expired(now)]

    def _record(self, batch: list[PendingItem], started: float, elapsed: float) -> None:
        model = self._model
        lengths = [p.length for p in batch]
        computed = self._cost.tokens(lengths)
        metrics.INFERENCE_DURATION.labels(model=model).observe(elapsed)
        metrics.BATCH_SIZE.labels(model=model).observe(len(batch))
        metrics.BATCH_TOKENS.labels(model=model).observe(computed)
        metrics.PADDING_RATIO.labels(model=model).observe(self._cost.padding_ratio(lengths))
        metrics.TOKENS_SCORED.labels(model=model).inc(sum(p.item.num_scored for p in batch))
        queue = metrics.QUEUE_DURATION.labels(model=model)
        for p in batch:
            queue.observe(started - p.enqueued_at)
        log.debug(
            "batch model=%s size=%d tokens=%d computed=%d forward_ms=%.1f",
            model,
            len(batch),
            sum(lengths),
            computed,
            elapsed * 1000,
        )
