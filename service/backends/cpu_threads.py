"""Fit torch's CPU thread pool to the CPUs this process may actually use, and the thread a
CPU model's torch work runs on (``ComputeThread``; the process's lanes of them are in
``cpu_lanes``).

torch sizes its intra-op pool from the machine's cores, not from the container's CPU quota
or this process's affinity: a pod limited to 4 CPUs on a 64-core node would run a 32-thread
pool, be throttled by the kernel for most of each period, and answer even its health
probes late. An explicit ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) is the operator's
choice and is left alone.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import torch

from service.tasks import fulfil

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs (quota / period, e.g. 2.5), or None when unlimited or unknown:
    the smallest quota of this process's cgroup (named in ``membership``) and its
    ancestors under the mount ``root``, so a limit set on a parent (a pod, a systemd
    slice) counts too.

    Reads cgroup v2's ``cpu.max`` ("max 100000" or "250000 100000"), else cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 means unlimited).
    """
    limits = [limit for folder in _cpu_folders(root, membership) if (limit := _limit(folder))]
    return min(limits) if limits else None


def _limit(folder: Path) -> float | None:
    v2 = _read(folder / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period or "100000")
    v1_quota = _read(folder / "cpu.cfs_quota_us")
    v1_period = _read(folder / "cpu.cfs_period_us")
    if v1_quota is not None and v1_period is not None:
        return _ratio(v1_quota, v1_period)
    return None


def _cpu_folders(root: Path, membership: Path) -> list[Path]:
    """The folders that may hold this process's CPU quota: its cgroup's (v2 ``0::PATH``, or
    v1's line whose controllers include ``cpu``) and their ancestors, then the mount's own
    (inside a container the mount is the container's cgroup)."""
    places: list[tuple[Path, str]] = []
    for line in (_read(membership) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            places.append((root, path))
        elif "cpu" in controllers.split(","):
            mounts = {root / "cpu", root / "cpu,cpuacct", root / controllers}
            places += [(mount, path) for mount in sorted(mounts)]
    places += [(root, "/"), (root / "cpu", "/"), (root / "cpu,cpuacct", "/")]
    folders: list[Path] = []
    for mount, path in places:
        parts = PurePosixPath(path.strip() or "/").parts[1:]  # without the leading "/"
        for depth in range(len(parts), -1, -1):
            folder = mount.joinpath(*parts[:depth])
            if folder not in folders:
                folders.append(folder)
    return folders


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return q / p if q > 0 and p > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, membership)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def fit_threads(
    environ: Mapping[str, str] = os.environ,
    root: Path = CGROUP_ROOT,
    membership: Path = PROC_CGROUP,
) -> int:
    """Lower torch's intra-op threads to the usable CPUs; returns the thread count in use."""
    current = torch.get_num_threads()
    if any(environ.get(name) for name in THREAD_ENV_VARS):
        return current
    wanted = usable_cpus(root, membership)
    if wanted < current:
        torch.set_num_threads(wanted)
        log.info(
            "torch threads %d -> %d: the CPUs this process may use (affinity and cgroup "
            "quota); set OMP_NUM_THREADS to choose",
            current,
            wanted,
        )
    return torch.get_num_threads()


R = TypeVar("R")


class ComputeThread:
    """One daemon thread that runs the calls handed to it, in the order they came.

    CPU models run their torch work on a few of these (``cpu_lanes.CPU_LANES``), never on
    the threads that call them: torch's OpenMP runtime (libgomp) keeps a worker pool per
    thread that ever ran parallel work, and once it manages more threads than there are
    CPUs it parks workers between parallel regions instead of spinning. With one forward
    thread per model, a second model that had run once made the first one's lone short
    forward pass 70 ms instead of 41 on two cores (``bench/NOTES.md``)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def run(self, fn: Callable[[], R]) -> R:
        """``fn()`` on this thread (at once when called from it); its error is raised here."""
        if self.owns_current():
            return fn()
        job: Future[R] = Future()
        self._ensure_started()
        self._jobs.put((job, fn))
        return job.result()

    def owns_current(self) -> bool:
        """Whether the calling thread is this one."""
        return threading.current_thread() is self._thread

    def _ensure_started(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            fulfil(*self._jobs.get())
