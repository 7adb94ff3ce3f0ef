"""What waits in a batch queue (one forward window, the caller's future, and its clock), and
how results and errors reach the callers' event loops from the worker thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from service.backends.base import ForwardItem, ForwardResult

log = logging.getLogger(__name__)
V = TypeVar("V")


@dataclass(frozen=True)
class Timing:
    """Where an item's time went, in seconds: waiting in the queue, and its batch's forward
    (``batch`` numbers the forward pass, so a request can add up distinct batches)."""

    queue_s: float
    inference_s: float
    batch: int


@dataclass(frozen=True)
class ScoredItem:
    """A finished item: its scores and its timing."""

    result: ForwardResult
    timing: Timing


@dataclass(eq=False)
class RequestWindows:
    """The windows of one request (one ``submit``) not yet through a forward pass."""

    left: int

    def one_done(self) -> bool:
        """One window went through a pass (its results or its error handed out); True
        for the request's last. Windows dropped from the queue are not counted: their
        request never finishes in a pass."""
        self.left -= 1
        return self.left == 0


@dataclass(eq=False)
class PendingItem:
    """A window waiting for a forward pass.

    ``deadline`` is a ``time.monotonic()`` instant after which nobody waits for the result.
    ``turn`` is its place in the batcher's fair order (see ``DynamicBatcher``): items of
    earlier turns are taken first, items of one turn in arrival order (``sequence``).
    ``request`` is shared by the windows of one ``submit``.
    """

    item: ForwardItem
    future: asyncio.Future[ScoredItem]
    enqueued_at: float
    deadline: float | None = None
    sequence: int = field(default=0)
    turn: int = 0
    request: RequestWindows = field(default_factory=lambda: RequestWindows(1))

    @property
    def length(self) -> int:
        """Tokens the forward pass runs for this window (``ForwardItem.model_input``): the
        token budget and the batch metrics count these, not the window's last token."""
        return len(self.item.model_input)

    def fair_order(self) -> tuple[int, int]:
        """Sorts items into the order batches take them: by turn, then by arrival."""
        return (self.turn, self.sequence)

    def abandoned(self) -> bool:
        """The caller is gone: its future was cancelled (disconnect, timeout) or completed."""
        return self.future.done()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


def deliver(
    batch: list[PendingItem],
    outputs: list[ForwardResult],
    started: float,
    elapsed: float,
    number: int,
) -> None:
    """Hand each item its result on its caller's event loop (one call per loop)."""
    results = [
        ScoredItem(output, Timing(started - p.enqueued_at, elapsed, number))
        for p, output in zip(batch, outputs, strict=True)
    ]

    def resolve(pairs: list[tuple[PendingItem, ScoredItem]]) -> None:
        for p, result in pairs:
            if not p.future.done():
                p.future.set_result(result)

    _on_loops(list(zip(batch, results, strict=True)), resolve)


def fail(batch: list[PendingItem], error: Exception) -> None:
    """Fail each item's future with ``error`` (those still waiting), on its own loop."""

    def reject(pairs: list[tuple[PendingItem, Exception]]) -> None:
        for p, exc in pairs:
            if not p.future.done():
                p.future.set_exception(exc)

    _on_loops([(p, error) for p in batch], reject)


def _on_loops(
    pairs: list[tuple[PendingItem, V]], action: Callable[[list[tuple[PendingItem, V]]], None]
) -> None:
    """Run ``action`` on the pairs of each event loop, in that loop's thread (futures are
    not thread-safe). A loop that is already closed has nobody left to tell."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[PendingItem, V]]] = {}
    for pair in pairs:
        by_loop.setdefault(pair[0].future.get_loop(), []).append(pair)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(action, group)
        except RuntimeError:
            log.debug("event loop closed; %d results undelivered", len(group))
