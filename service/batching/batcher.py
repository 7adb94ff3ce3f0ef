"""The dynamic batcher: merges windows from any number of callers into forward passes.

One per model. Callers ``submit`` windows and await their futures. A worker thread per lane
of the backend (``lanes``: passes side by side, e.g. one per core of a small CPU) takes its
own batches from the queue and runs them, so none waits for the event loop while work is
queued: tokenizing, assembling results and encoding responses on the loop overlap the next
forward pass. Every lane is kept busy while work is queued; a pass gets the whole device
when nothing else runs or waits and its batch does not split evenly (see ``lanes``).

A batch closes when it is full (``max_batch_tokens`` counted by the backend's layout, see
``cost``; or ``max_batch_size``) or ``max_wait_ms`` after its oldest item arrived, and,
right after a pass, once the callers that pass answered have sent their next requests or a
share of a pass has gone by (see ``rejoin``). Items whose caller is gone
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
from service.batching.lanes import LaneBoard, split_evenly
from service.batching.pass_record import record_pass
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
    """Queue + batching worker threads (one per lane) in front of one batched backend."""

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
        self._changed = threading.Condition()  # guards _pending, _held, _board and _closed
        self._counter = itertools.count()
        self._batches = itertools.count()
        self._lanes = max(1, backend.lanes)
        self._threads: list[threading.Thread | None] = [None] * self._lanes
        self._board = LaneBoard(self._lanes)  # the passes running now, by lane
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
            self._ensure_workers()
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
    def _ensure_workers(self) -> None:
        for lane, thread in enumerate(self._threads):
            if thread is None or not thread.is_alive():
                suffix = f"-{lane}" if lane else ""
                thread = threading.Thread(
                    target=self._work, args=(lane,), name=f"forward-{self._model}{suffix}",
                    daemon=True,
                )  # fmt: skip
                self._threads[lane] = thread
                thread.start()

    async def warmup(self) -> None:
        """The backend's warm-up forward, never beside a real batch, on a thread that ends
        with it (see ``on_own_thread``: no idle math-library pool stays beside the
        forward threads)."""

        def run() -> None:
            with self._board.holding_whole(self._changed):
                self._backend.warmup()

        await on_own_thread(f"warmup-{self._model}", run)

    async def close(self, wait_s: float = 30.0) -> None:
        """Stop taking batches; fail what still waits (and the batch in flight); release
        the backend once the worker is out of it, waiting at most ``wait_s`` for that (the
        worker is a daemon thread: a process that stops sooner does not wait for it)."""
        with self._changed:
            self._closed = True
            waiting, self._pending = self._pending + self._board.items(), []
            self._board.handed.clear()
            self._depth.set(0)
            self._changed.notify_all()
        # The batches in flight cannot be interrupted; their callers are told now, and
        # their results are dropped when they end.
        fail(waiting, Unavailable("the model is shutting down"))
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            if thread is not None and thread.is_alive():
                await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return  # still in a forward pass: its backend cannot be released
        self._backend.close()

    # ---- the worker thread -----------------------------------------------------------
    def _work(self, lane: int) -> None:
        while (taken := self._next_batch(lane)) is not None:
            batch, share = taken
            try:
                self._execute(batch, share)
            finally:
                with self._changed:
                    self._board.end(lane)
                    self._changed.notify_all()

    def _next_batch(self, lane: int) -> tuple[list[PendingItem], int | None] | None:
        """Block until a batch is due for ``lane`` (a part handed to it, or a batch full,
        or whose oldest item waited ``max_wait_ms`` with the wait for the last pass's
        callers over, see ``rejoin``; never beside a pass that holds the whole device).
        Returns it with the share of the device its pass gets (see ``_share``); None once
        closed."""
        with self._changed:
            while not self._closed:
                if (handed := self._board.handed.pop(lane, None)) is not None:
                    self._board.start(lane, handed, whole=False)
                    return handed, lane
                self._drop_gone()
                if not self._pending or self._board.whole:
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
                queued = [p.length for p in self._pending]
                cap = self._board.fair_share(lane, queued, self._cost, self._max_tokens)
                batch, share = self._share(lane, self._take(cap))
                self._board.start(lane, batch, whole=share is None)
                self._changed.notify_all()  # idle lanes: parts handed out, or work left
                return batch, share
        return None

    def _share(self, lane: int, batch: list[PendingItem]) -> tuple[list[PendingItem], int | None]:
        """The part of ``batch`` that ``lane`` runs, and on what share of the device: its
        lane's while other lanes are busy or the queue holds work for them; split evenly
        with the idle lanes, parts handed to them, where that is worth it; otherwise the
        whole device (None)."""
        if self._lanes == 1:
            return batch, None
        idle = self._board.idle(besides=lane)
        if len(idle) < self._lanes - 1 or self._pending:
            return batch, lane
        groups = split_evenly([p.length for p in batch], len(idle) + 1, self._cost)
        if groups is None:
            return batch, None
        parts = [[batch[i] for i in group] for group in groups]
        for other, part in zip(idle, parts[1:], strict=False):
            self._board.handed[other] = part
        return parts[0], lane

    def _full(self) -> bool:
        """Whether the waiting items already fill a batch."""
        if len(self._pending) >= self._max_size:
            return True
        return self._cost.tokens([p.length for p in self._pending]) >= self._max_tokens

    def _take(self, cap: int | None = None) -> list[PendingItem]:
        """The first item in fair order plus, within the budget (and ``cap``, a cost in
        tokens), its nearest neighbours in length (padded layouts) or the items next in
        fair order (ragged layouts)."""
        budget = self._max_tokens if cap is None else min(cap, self._max_tokens)
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
            if batch and cost > budget:
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

    def _execute(
        self, batch: list[PendingItem], share: int | None, recovery: _Recovery | None = None
    ) -> None:
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
            outputs = self._backend.forward([p.item for p in batch], share)
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
                    self._execute(waiting, share, recovery)
            return
        recovery.passed = True
        elapsed = time.monotonic() - started
        self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * elapsed
        record_pass(self._model, self._cost, batch, share, started, elapsed)
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
