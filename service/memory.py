"""Keeping a long-running server's resident memory flat under glibc's allocator.

glibc raises its mmap threshold (up to 32 MiB) each time an mmapped block is freed, so
after a few batches the per-batch buffers (logits are ~200 kB per token with a 49k
vocabulary) come from the heap arenas, whose freed space fragments and stays resident: RSS
climbs in steps as batch shapes vary (measured: +6% to +11% over a 20,000-request soak,
README "Operations"). ``malloc_trim`` hands that free space back; the engine calls it once
no request has been in flight for a moment, so it does not run under load (a forward pass
whose callers have all left may still be finishing; the trim only takes the heap lock
beside it).
(Pinning the mmap threshold instead, at 1 MiB, kept RSS flat but cost 19% throughput on
the embedded model: every activation became a fresh, zeroed mapping.)

While work is in flight the opposite holds: glibc also gives the top of the heap back
whenever more than twice its current mmap threshold lies free there, and a forward pass
frees most of its activations at once, so the next pass faulted its pages in again (a
Llama-style MLP block on a 530-token batch took 4.3 ms against 2.2 ms on a VM; a whole
forward pass 5-9% longer). With idle trimming on, freed memory is therefore kept while the
server is busy (``keep_freed_memory``) and handed back when it goes idle.

Memory kept that way sits in whichever glibc arena the allocating thread uses, and glibc
makes up to eight arenas per core, each growing its own 64 MiB heaps. A soak on 2 cores
showed 18 such heaps holding ~170 MiB, and one soak stepped up by 64.3 MiB (one heap)
after its warm-up and stayed there. A trimming server therefore keeps two arenas: what
one thread frees, another can reuse.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from collections.abc import Callable

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
"""glibc arenas at most (the main heap and one more) for threads that start after."""
MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks up to this size come from the heap (glibc's own dynamic threshold stops here)."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory the heap keeps at its top between idle trims."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, set up for ``mallopt`` and ``malloc_trim`` (looked up once: ``find_library``
    runs ``ldconfig``); None under another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it at once: blocks up to
    32 MiB from the heap, up to 1 GiB free at its top, in at most ``ARENAS`` arenas. Only
    for a process that trims when idle (``IdleTrimmer``); called before the server's
    threads start. False where the allocator is not glibc's."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    arenas_set = libc.mallopt(M_ARENA_MAX, ARENAS)
    return bool(mmap_set and trim_set and arenas_set)


def _glibc_malloc_trim() -> Callable[[], object] | None:
    libc = _glibc()
    if libc is None:
        return None  # not glibc: nothing to trim this way
    trim = libc.malloc_trim
    return lambda: trim(0)


class IdleTrimmer:
    """Returns freed heap memory to the system once the server has been idle for
    ``quiet_s`` seconds (0: never), in a worker thread. With glibc's own trim (the
    default ``trim``), freed memory is kept while busy (``keep_freed_memory``)."""

    def __init__(
        self,
        quiet_s: float,
        is_idle: Callable[[], bool],
        trim: Callable[[], object] | None = None,
    ) -> None:
        self.quiet_s = quiet_s
        self._is_idle = is_idle
        self._trim = trim if trim is not None else _glibc_malloc_trim()
        self._scheduled: asyncio.TimerHandle | None = None
        self.trims = 0
        self.keeps_freed_memory = trim is None and self.enabled and keep_freed_memory()

    @property
    def enabled(self) -> bool:
        return self.quiet_s > 0 and self._trim is not None

    def idle(self) -> None:
        """The server has nothing in flight: trim after ``quiet_s`` if it stays so."""
        if not self.enabled:
            return
        if self._scheduled is not None:
            self._scheduled.cancel()
        self._scheduled = asyncio.get_running_loop().call_later(self.quiet_s, self._maybe_trim)

    def _maybe_trim(self) -> None:
        self._scheduled = None
        if self._trim is None or not self._is_idle():
            return  # work came in meanwhile; its end schedules the next try
        self.trims += 1
        asyncio.get_running_loop().run_in_executor(None, self._trim)
