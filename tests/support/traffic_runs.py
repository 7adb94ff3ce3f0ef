"""The soak and overload runs over a running server (the tests and ``make soak`` share them).

Soak: a warm-up, then many mixed requests at a sustainable concurrency; the server's RSS,
open file descriptors and threads are read when it is idle after each phase. Overload:
far more callers than the queue holds, all at once; the server must refuse the surplus
with 429 + Retry-After and answer the rest correctly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from traffic import Call, ProcessFigures, Tally, drive, menu, percentile, references

SOAK_TEXTS = [
    "The cat sat on the mat.",
    "Grüße aus München, wo das Wetter heute schön ist.",
    "Москва — столица России.",
    "To make bread, mix flour, water, salt and yeast.",
    "print('hello world')  # a line of code",
    "An orangutan is a great ape of Borneo and Sumatra.",
]


# Past the server's idle trim (--memory-trim-after-idle-s, 0.5 s by default, then
# malloc_trim in a worker thread): a reading taken just before the trim in one place and just
# after it in another would show a step that is only the trim's timing.
TRIMMED_S = 2.0


def wait_idle(url: str, timeout_s: float = 60.0, settle_s: float = 0.5) -> None:
    """Until nothing is queued or in flight, then ``settle_s`` more (so process figures are
    compared at rest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        busy = [
            line
            for line in text.splitlines()
            if line.startswith(("lmscore_queue_depth{", "lmscore_inflight_requests "))
            and float(line.rsplit(" ", 1)[1]) != 0
        ]
        if not busy:
            time.sleep(settle_s)  # let closed connections and finished threads go
            return
        time.sleep(0.2)
    raise TimeoutError("the server did not go idle")


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    answered = sum(tally.statuses.values())
    return {
        "requests": tally.sent,
        "seconds": round(seconds, 1),
        "requests_per_s": round(tally.sent / seconds, 1),
        "statuses": dict(sorted(tally.statuses.items())),
        "left_early": tally.left,
        "transport_errors": len(tally.transport_errors),
        "wrong": len(tally.wrong),
        "wrong_examples": tally.wrong[:5],
        "missing_retry_after": tally.missing_retry_after,
        "ok_latency_p50_ms": round(1000 * percentile(tally.latencies_ok_s, 0.5), 1),
        "ok_latency_p99_ms": round(1000 * percentile(tally.latencies_ok_s, 0.99), 1),
        "answered": answered,
    }


def run(
    url: str, calls: list[Call], refs: dict[str, Any], total: int, concurrency: int, rel_tol: float
) -> dict[str, Any]:
    started = time.perf_counter()
    tally = asyncio.run(
        drive(url, calls, refs, total=total, concurrency=concurrency, rel_tol=rel_tol)
    )
    return summary(tally, time.perf_counter() - started)


def soak(
    url: str,
    pid: int,
    *,
    total: int,
    warmup: int,
    concurrency: int,
    rel_tol: float,
    checkpoints: int = 5,
) -> dict[str, Any]:
    """Warm up, read the process, run ``total`` mixed requests in ``checkpoints`` parts
    and read the process (idle) after each: a leak grows at every checkpoint, a cache or
    an allocator arena steps up once and stays."""
    calls = menu(SOAK_TEXTS)
    refs = asyncio.run(references(url, calls))
    warm = run(url, calls, refs, warmup, concurrency, rel_tol)
    wait_idle(url, settle_s=TRIMMED_S)
    before = ProcessFigures.of(pid)
    tally, load_s, samples = Tally(), 0.0, []
    for part in range(checkpoints):
        count = total // checkpoints + (part < total % checkpoints)
        started = time.perf_counter()
        asyncio.run(
            drive(url, calls, refs, total=count, concurrency=concurrency, rel_tol=rel_tol,
                  seed=part + 1, tally=tally)
        )  # fmt: skip
        load_s += time.perf_counter() - started  # the idle waits below are not load
        wait_idle(url, settle_s=TRIMMED_S)
        samples.append({"requests": tally.sent, **vars(ProcessFigures.of(pid))})
    after = ProcessFigures.of(pid)
    return {
        "warmup": warm,
        "soak": summary(tally, load_s),
        "process_after_warmup": vars(before),
        "process_at_checkpoints": samples,
        "process_after_soak": vars(after),
        "rss_growth": round(after.rss_kib / before.rss_kib - 1, 4),
    }


def overload(url: str, *, total: int, concurrency: int, rel_tol: float) -> dict[str, Any]:
    """``total`` scoring requests from ``concurrency`` callers at once (no refusals or
    early leavers in the mix: every answer is a 200 to check, or a 429)."""
    calls = [c for c in menu(SOAK_TEXTS) if 200 in c.expect and c.leave_after_s is None]
    refs = asyncio.run(references(url, calls))
    return run(url, calls, refs, total, concurrency, rel_tol)
