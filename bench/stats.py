"""Small helpers shared by the benchmark modules: percentiles, rates, the machine's name."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100) of ``values``, in their unit; 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rate(count: float, seconds: float) -> float:
    """``count`` per second; 0 when no time passed."""
    return count / seconds if seconds > 0 else 0.0


def mean_nll(sum_logprob: float, scored_tokens: int) -> float | None:
    """Mean negative log-likelihood in nats per scored token, or None without tokens."""
    return -sum_logprob / scored_tokens if scored_tokens else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def machine() -> str:
    """The CPU model and core count, and the GPU where torch sees one, e.g. ``AMD EPYC,
    2 cpus`` or ``AMD EPYC 9654, 16 cpus, NVIDIA H100 80GB HBM3``."""
    name = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    described = f"{name}, {os.cpu_count()} cpus"
    import torch

    if torch.cuda.is_available():
        described += f", {torch.cuda.get_device_name()}"
    return described


def _cpu_seconds() -> tuple[float, float]:
    """(CPU-seconds the machine was busy or stolen, CPU-seconds this process and its reaped
    children used), both since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


class ForeignLoad:
    """Measures the share of the machine's CPUs that other processes used meanwhile (0-1).

    Children count as ours once reaped (``wait``), so exit the block after stopping them.
    A share above a few percent means the numbers of that phase are not clean.
    """

    def __enter__(self) -> ForeignLoad:
        self.share: float | None = None
        self._started = time.perf_counter()
        self._before = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own = _cpu_seconds()
        wall = time.perf_counter() - self._started
        foreign = (busy - self._before[0]) - (own - self._before[1])
        self.share = max(0.0, foreign / (wall * (os.cpu_count() or 1))) if wall > 0 else None
