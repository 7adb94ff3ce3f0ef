"""Lanes on the CPU: forward passes side by side, each on its own share of the cores.

A forward pass over short texts runs ~1,500 parallel regions, and on a small CPU much of
its time goes to splitting each op across the cores and joining again. Two passes side by
side, one core each, scored 1.17x the tokens per second of passes of the same size taking
turns on both cores (2-core Intel Xeon with AMX, bf16, 16 short texts a pass;
``bench/NOTES.md``). A pass alone still gets every core, so a lone request is as fast as
before: the batcher asks for the whole CPU (``lane=None``) when nothing runs beside it.

Every CPU model in the process runs its torch work on these lanes, each one thread
(``ComputeThread``): torch's OpenMP runtime keeps a worker pool per thread that ran
parallel work, and a second multi-threaded pool makes both park their workers between
regions (a lone short pass 1.7x slower, NOTES). With one thread per lane only lane 0,
which also runs the whole-CPU passes, ever keeps a pool.

The lanes enforce what the batcher plans: a whole-CPU pass starts once no lane pass runs,
nothing starts beside it, and lane passes arriving while one waits queue behind it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from service.backends.cpu_threads import ComputeThread

log = logging.getLogger(__name__)

R = TypeVar("R")


def auto_lanes(threads: int) -> int:
    """Lanes when none are asked for: two where torch runs two threads (the case measured),
    one (passes take turns on every thread) otherwise."""
    return 2 if threads == 2 else 1


class CpuLanes:
    """The process's CPU compute lanes (``CPU_LANES``); one lane until ``configure``."""

    def __init__(self, name: str = "cpu-compute") -> None:
        self._name = name
        self._threads = [ComputeThread(name)]
        self._total_threads = 1
        self._count = 1
        self._configured = False
        self._state = threading.Condition()
        self._busy = 0  # lane passes running
        self._whole = False  # a whole-CPU pass is running
        self._whole_waiting = 0

    def configure(self, requested: int | None, threads: int | None = None) -> int:
        """Size the lanes for ``threads`` torch threads (default: torch's count the first
        time, after ``fit_threads``): the ``requested`` number of lanes (at most one per
        thread), or ``auto_lanes``. Returns the number of lanes. Process-wide: the last
        model loaded sets it. torch's count is read once because a lane pass's
        ``torch.set_num_threads`` is also what threads started later begin with."""
        if threads is not None:
            total = threads
        else:
            total = self._total_threads if self._configured else torch.get_num_threads()
        count = auto_lanes(total) if requested is None else max(1, min(requested, total))
        with self._state:
            self._total_threads, self._count, self._configured = total, count, True
            while len(self._threads) < count:
                self._threads.append(ComputeThread(f"{self._name}-{len(self._threads)}"))
        if count > 1:
            log.info(
                "CPU passes run side by side on %d lanes of %d thread(s); a pass alone "
                "gets all %d threads",
                count,
                self.lane_threads,
                total,
            )
        return count

    @property
    def count(self) -> int:
        """Lanes: forward passes that may run side by side."""
        return self._count

    @property
    def lane_threads(self) -> int:
        """torch threads of a pass on one lane."""
        return max(1, self._total_threads // self._count)

    def run(self, fn: Callable[[], R], lane: int | None = None) -> R:
        """``fn()`` on lane ``lane`` with its share of the threads, beside other lanes'
        passes; with ``lane=None`` on lane 0 with every thread, nothing beside it. A call
        from a lane's own thread (a model calling another inside its pass) runs at once."""
        if any(thread.owns_current() for thread in self._threads):
            return fn()
        whole = lane is None or self._count == 1
        index = 0 if whole or lane is None else lane % self._count
        threads = self._total_threads if whole else self.lane_threads
        with self._held(whole):
            return self._threads[index].run(lambda: _with_threads(threads, fn))

    @contextmanager
    def _held(self, whole: bool) -> Iterator[None]:
        with self._state:
            if whole:
                self._whole_waiting += 1
                while self._busy or self._whole:
                    self._state.wait()
                self._whole_waiting -= 1
                self._whole = True
            else:
                while self._whole or self._whole_waiting:
                    self._state.wait()
                self._busy += 1
        try:
            yield
        finally:
            with self._state:
                if whole:
                    self._whole = False
                else:
                    self._busy -= 1
                self._state.notify_all()


def _with_threads(threads: int, fn: Callable[[], R]) -> R:
    # Set on every pass: a lane thread alternates between its share and the whole CPU.
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn()


CPU_LANES = CpuLanes()
"""The process's lanes for CPU models' torch work."""
