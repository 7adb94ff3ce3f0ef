"""Fit torch's CPU thread pool to the CPUs this process may actually use.

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
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (quota / period, e.g. 2.5), or None when unlimited or unknown.

    Reads cgroup v2's ``cpu.max`` ("max 100000" or "250000 100000"), else cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 means unlimited).
    """
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period or "100000")
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        v1_quota = _read(folder / "cpu.cfs_quota_us")
        v1_period = _read(folder / "cpu.cfs_period_us")
        if v1_quota is not None and v1_period is not None:
            return _ratio(v1_quota, v1_period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return q / p if q > 0 and p > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def fit_threads(environ: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT) -> int:
    """Lower torch's intra-op threads to the usable CPUs; returns the thread count in use."""
    current = torch.get_num_threads()
    if any(environ.get(name) for name in THREAD_ENV_VARS):
        return current
    wanted = usable_cpus(root)
    if wanted < current:
        torch.set_num_threads(wanted)
        log.info(
            "torch threads %d -> %d: the CPUs this process may use (affinity and cgroup "
            "quota); set OMP_NUM_THREADS to choose",
            current,
            wanted,
        )
    return torch.get_num_threads()
