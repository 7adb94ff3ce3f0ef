"""What the engine needs from a model's scheduler, whoever does the batching.

``DynamicBatcher`` (our batches, for backends that score one batch at a time) and
``PassThroughScheduler`` (for backends that batch by themselves) both offer it; the
backend registry picks one per backend, so the engine never asks what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from service.backends.base import ForwardItem, ModelBackend
from service.batching.pending import ScoredItem


class Scheduler(Protocol):
    """Scores windows for callers before their deadlines, for one model."""

    @property
    def backend(self) -> ModelBackend:
        """The model behind the scheduler (tokenizer, info, BOS)."""
        ...

    async def submit(
        self, items: Sequence[ForwardItem], deadline: float | None = None
    ) -> list[ScoredItem]:
        """Score ``items`` (results in order) before ``deadline`` (``time.monotonic()``).

        Raises Overloaded when the queue is full, Timeout past the deadline, Unavailable
        once closed. Cancelling the caller cancels its items."""
        ...

    def reserve(self, windows: int) -> AbstractContextManager[None]:
        """Hold room in the queue for ``windows`` windows (a request's fewest) from its
        admission until this task (or one it starts) submits them, or the block ends.

        Raises Overloaded at once when the queue, counting the room other admitted
        requests hold, is full, so a request is refused before it costs tokenizing and a
        burst is not tokenized only to be refused at ``submit``. ``submit`` turns the
        hold into queued windows and still checks the request's own count."""
        ...

    async def warmup(self) -> None:
        """Make the first real request fast (lazy initialisation, kernels)."""
        ...

    async def close(self, wait_s: float = 30.0) -> None:
        """Fail what still waits, stop the workers and release the backend, waiting at
        most ``wait_s`` seconds for work already running on the model."""
        ...

    @property
    def queue_depth(self) -> int:
        """Windows admitted and not yet finished or taken into a batch."""
        ...

    @property
    def capacity(self) -> int:
        """Windows the queue holds (``--max-queue``): a request needing more never fits."""
        ...
