"""What waits in a batch queue: one forward window, the caller's future, and its clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from service.backends.base import ForwardItem, ForwardResult


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
class PendingItem:
    """A window waiting for a forward pass.

    ``deadline`` is a ``time.monotonic()`` instant after which nobody waits for the result.
    ``turn`` is its place in the batcher's fair order (see ``DynamicBatcher``): items of
    earlier turns are taken first, items of one turn in arrival order (``sequence``).
    """

    item: ForwardItem
    future: asyncio.Future[ScoredItem]
    enqueued_at: float
    deadline: float | None = None
    sequence: int = field(default=0)
    turn: int = 0

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
