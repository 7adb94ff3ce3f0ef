"""The server's rows: concurrent HTTP clients against a running ``lmscore serve``.

Every row replays a list of requests (each a list of texts) through POST /v1/score/text
with a fixed number in flight and reports tokens/s (tokens = ``usage.prompt_tokens``),
requests/s, latency percentiles in ms, and the mean batch size and padding ratio the
server's /metrics recorded meanwhile. Peak RSS comes from /proc/PID/status (VmHWM, KiB).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families
from shared_prefix import shared_prefix_row
from stats import mean_nll, percentile, rate


def batch_stats(url: str) -> dict[str, float]:
    """Running totals from /metrics: items batched, batches, and the padding ratios' sum."""
    wanted = {
        "lmscore_batch_size_sum": "items",
        "lmscore_batch_size_count": "batches",
        "lmscore_padding_ratio_sum": "padding_sum",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[wanted[sample.name]] += sample.value
    return totals


async def _send_all(url: str, requests: list[list[str]], concurrency: int) -> dict[str, Any]:
    """POST every request with ``concurrency`` in flight; latencies in seconds.

    The load generator shares the server's cores, so it is aiohttp: httpx's async client
    spent ~2.3 ms of CPU per request here (15% of the two cores in the short row), aiohttp
    ~0.5 ms (3%). A client on another machine costs the server nothing.
    """
    latencies: list[float] = []
    totals = {"tokens": 0, "scored": 0, "sum_logprob": 0.0}
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for texts in requests:
        queue.put_nowait(texts)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                texts = queue.get_nowait()
                started = time.perf_counter()
                async with client.post("/v1/score/text", json={"texts": texts}) as response:
                    response.raise_for_status()
                    body = await response.json()
                latencies.append(time.perf_counter() - started)
                totals["tokens"] += body["usage"]["prompt_tokens"]
                totals["scored"] += body["aggregate"]["num_scored_tokens"]
                totals["sum_logprob"] += body["aggregate"]["sum_logprob"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "latencies": latencies, **totals}


def replay(url: str, requests: list[list[str]], concurrency: int) -> dict[str, Any]:
    """One server row: throughput (tok/s, req/s), latency (ms) and batching from /metrics."""
    before = batch_stats(url)
    sent = asyncio.run(_send_all(url, requests, concurrency))
    after = batch_stats(url)
    batches = after["batches"] - before["batches"]
    latencies = sent["latencies"]
    return {
        "requests": len(requests),
        "texts": sum(len(texts) for texts in requests),
        "concurrency": concurrency,
        "seconds": sent["seconds"],
        "tokens": sent["tokens"],
        "tokens_per_s": rate(sent["tokens"], sent["seconds"]),
        "requests_per_s": rate(len(requests), sent["seconds"]),
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p95_ms": 1000 * percentile(latencies, 95),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "mean_batch_size": (after["items"] - before["items"]) / max(1.0, batches),
        "mean_padding_ratio": (after["padding_sum"] - before["padding_sum"]) / max(1.0, batches),
        "mean_nll": mean_nll(sent["sum_logprob"], sent["scored"]),
    }


def status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (``VmHWM``, ``VmRSS``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (clear_refs 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples VmRSS (KiB) of a process every ``interval_s`` seconds on a thread; keeps the max."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s, self.max_kib = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_kib = max(self.max_kib, status_kib(self.pid, "VmRSS"))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_in_flight(url: str, pid: int, docs: list[str]) -> dict[str, Any]:
    """Run ``docs`` all at once (one per request) and the server's peak RSS in MiB meanwhile.

    VmHWM is a high-water mark, so the overall peak is read first, then reset (where Linux
    allows it) so the peak read after the run belongs to this run; VmRSS is also sampled.
    """
    overall_before_kib = status_kib(pid, "VmHWM")
    was_reset = reset_peak_rss(pid)
    with RssSampler(pid) as sampler:
        row = replay(url, [[d] for d in docs], len(docs))
    hwm_kib = status_kib(pid, "VmHWM")
    return {
        "row": row,
        "rss_peak_overall_mib": max(overall_before_kib, hwm_kib) / 1024,
        "rss_peak_in_flight_mib": (hwm_kib if was_reset else sampler.max_kib) / 1024,
        "rss_sampled_max_in_flight_mib": sampler.max_kib / 1024,
        "hwm_reset": was_reset,
        "docs_in_flight": len(docs),
    }


def server_rows(
    url: str, pid: int, short: list[str], docs: list[str], rss_docs: list[str], options: Any
) -> dict[str, Any]:
    """All server rows, one after another. ``options``: concurrency, texts_per_request."""
    per, conc = options.texts_per_request, options.concurrency
    replay(url, [[t] for t in short[:16]] + [[d] for d in docs[:4]], 16)  # warm the paths
    rows = {
        "short_1_per_request": replay(url, [[t] for t in short], conc),
        "docs_1_per_request": replay(url, [[d] for d in docs], conc),
        "short_many_per_request": replay(
            url, [short[i : i + per] for i in range(0, len(short), per)], 4
        ),
        "short_lone": replay(url, [[t] for t in short], 1),
    }
    rss = peak_rss_in_flight(url, pid, rss_docs)
    rows["docs_in_flight"] = rss.pop("row")
    endings = [t[:40] for t in short[:8]]  # eight short candidates for one long context
    prefix = shared_prefix_row(url, max(docs, key=len), [" " + e for e in endings])
    return {"rows": rows, "rss": rss, "shared_prefix": prefix}
