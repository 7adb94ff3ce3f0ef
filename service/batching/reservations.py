"""Queue room held for admitted requests from admission until they submit their windows.

A request is admitted before it is tokenized, and under a burst it waits a while for the
model's one tokenizer thread. Counting only queued windows at admission let a whole burst
through, to be refused one by one after tokenizing; holding room from admission to submit
refuses the excess at once, before it costs the tokenizer anything.

A hold belongs to the task that took it (and the tasks that task starts): ``submit`` in
that task turns its hold into queued windows, wherever in the call chain it happens, so
the code between the engine and the scheduler does not carry it along.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["HeldRoom", "Hold"]


@dataclass(eq=False)
class Hold:
    """``windows`` windows of one scheduler's queue promised to one admitted request."""

    room: HeldRoom
    windows: int
    active: bool = True


_HOLDS: ContextVar[tuple[Hold, ...]] = ContextVar("lmscore_queue_holds", default=())


class HeldRoom:
    """The windows a scheduler has promised to admitted requests that have not submitted.

    Not locked by itself: the scheduler passes its lock, or calls under it."""

    def __init__(self) -> None:
        self.windows = 0

    @contextmanager
    def holding(
        self,
        windows: int,
        admit: Callable[[int], None],
        lock: AbstractContextManager[object] | None = None,
    ) -> Iterator[None]:
        """``admit(windows)``, which raises when the queue (counting ``self.windows``) has
        no room, then hold ``windows`` windows for the calling task for the block; both
        under the scheduler's ``lock``."""
        guard = lock if lock is not None else nullcontext()
        with guard:
            admit(windows)
            self.windows += windows
            hold = Hold(self, windows)
        try:
            with _bound(hold):
                yield
        finally:
            with guard:
                self.release(hold)

    def release(self, hold: Hold) -> None:
        """Give the room back; a second release of the same hold does nothing."""
        if hold.active:
            hold.active = False
            self.windows -= hold.windows

    def release_current(self) -> None:
        """Release the calling task's innermost active hold on this room, if it has one:
        its windows are being queued for real."""
        for hold in reversed(_HOLDS.get()):
            if hold.room is self and hold.active:
                self.release(hold)
                return


@contextmanager
def _bound(hold: Hold) -> Iterator[None]:
    """Make ``hold`` the calling task's for the block (and that of tasks started in it)."""
    token = _HOLDS.set((*_HOLDS.get(), hold))
    try:
        yield
    finally:
        _HOLDS.reset(token)
