"""lmscore benchmark: the served throughput and latency against a naive transformers loop.

Starts ``lmscore serve`` (default dtype), replays real texts with concurrent clients —
one text per request (OOD checks) and many texts per request (pipelines) — and, in the
same run, scores the same texts one at a time with plain transformers. Prints a table and
writes a JSON result to bench/results/. A benchmark, not a test: numbers depend on the machine.

    .venv/bin/python bench/run.py [--short N] [--docs N] [--concurrency C] [--dtype D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docstrings import stdlib_docstrings
from server_process import start_server, stop_server


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def batch_stats(url: str) -> dict[str, float]:
    """Totals of batch size, padding ratio and batches from /metrics."""
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


async def replay(url: str, requests: list[list[str]], concurrency: int) -> dict[str, Any]:
    """Send every request (a list of texts) with ``concurrency`` in flight."""
    before = batch_stats(url)
    latencies: list[float] = []
    tokens = 0
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for texts in requests:
        queue.put_nowait(texts)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            nonlocal tokens
            while not queue.empty():
                texts = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/v1/score/text", json={"texts": texts})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                tokens += response.json()["usage"]["prompt_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    after = batch_stats(url)
    batches = after["batches"] - before["batches"]
    return {
        "requests": len(requests),
        "concurrency": concurrency,
        "seconds": elapsed,
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed,
        "requests_per_s": len(requests) / elapsed,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p95_ms": 1000 * percentile(latencies, 95),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "mean_batch_size": (after["items"] - before["items"]) / max(1.0, batches),
        "mean_padding_ratio": (after["padding_sum"] - before["padding_sum"]) / max(1.0, batches),
    }


def naive_loop(texts: list[str], dtype: str) -> dict[str, Any]:
    """One text per forward with labels = input ids: the hand-rolled script we replace."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.backends.hf import pick_dtype
    from service.models import ModelSpec, resolve
    from service.settings import Settings

    path = resolve(ModelSpec("default", "default"), Settings().cache_dir).path
    torch_dtype = pick_dtype(dtype, torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
    encoded = [tokenizer(t, return_tensors="pt").input_ids for t in texts]
    with torch.inference_mode():
        model(input_ids=encoded[0], labels=encoded[0])  # warm-up
        started = time.perf_counter()
        for ids in encoded:
            model(input_ids=ids, labels=ids)
        elapsed = time.perf_counter() - started
    tokens = sum(int(ids.shape[1]) for ids in encoded)
    return {
        "texts": len(texts),
        "seconds": elapsed,
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=256, help="one-text requests (OOD style)")
    parser.add_argument("--docs", type=int, default=128, help="documents for the pipeline run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--texts-per-request", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    short = stdlib_docstrings(60, 300, args.short)
    docs = stdlib_docstrings(800, 2500, args.docs)
    per = args.texts_per_request
    log = args.out / "server.log"
    args.out.mkdir(parents=True, exist_ok=True)
    # Generous limits: the benchmark measures throughput, not admission control.
    server = start_server(
        [
            "--dtype",
            args.dtype,
            "--backend",
            args.backend,
            "--request-timeout-s",
            "600",
            "--max-queue",
            "100000",
        ],
        log,
        timeout_s=600,
    )
    try:
        url = server.url
        dtype = httpx.get(f"{url}/v1/models").json()["data"][0]["dtype"]
        asyncio.run(replay(url, [[t] for t in short[:16]], 16))  # warm the server's paths
        results = {
            "sequential_short": asyncio.run(replay(url, [[t] for t in short[:64]], 1)),
            "concurrent_short": asyncio.run(replay(url, [[t] for t in short], args.concurrency)),
            "pipeline_docs": asyncio.run(
                replay(url, [docs[i : i + per] for i in range(0, len(docs), per)], 4)
            ),
        }
    finally:
        stop_server(server)
    results["naive_short"] = naive_loop(short, dtype)
    results["naive_docs"] = naive_loop(docs, dtype)
    speedup = (
        results["concurrent_short"]["tokens_per_s"] / results["sequential_short"]["tokens_per_s"]
    )
    summary = {
        "backend": args.backend,
        "dtype": dtype,
        "machine": f"{platform.machine()} cpus={os.cpu_count()}",
        "concurrent_vs_sequential_short": speedup,
        "served_vs_naive_short": results["concurrent_short"]["tokens_per_s"]
        / results["naive_short"]["tokens_per_s"],
        "served_vs_naive_docs": results["pipeline_docs"]["tokens_per_s"]
        / results["naive_docs"]["tokens_per_s"],
        **results,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_file = args.out / f"bench-{stamp}.json"
    out_file.write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"\nwritten {out_file}")
    return 0


def print_table(summary: dict[str, Any]) -> None:
    print(f"backend {summary['backend']}, dtype {summary['dtype']}  ({summary['machine']})")
    print(
        f"{'run':<18} {'tok/s':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'pad':>5}"
    )
    for name in ("sequential_short", "concurrent_short", "pipeline_docs"):
        r = summary[name]
        print(
            f"{name:<18} {r['tokens_per_s']:8.0f} {r['requests_per_s']:7.1f} {r['latency_p50_ms']:8.0f} "
            f"{r['latency_p95_ms']:8.0f} {r['latency_p99_ms']:8.0f} {r['mean_batch_size']:6.1f} "
            f"{r['mean_padding_ratio']:5.2f}"
        )
    for name in ("naive_short", "naive_docs"):
        print(f"{name:<18} {summary[name]['tokens_per_s']:8.0f}")
    print(
        f"concurrent/sequential {summary['concurrent_vs_sequential_short']:.2f}x, "
        f"served/naive short {summary['served_vs_naive_short']:.2f}x, "
        f"docs {summary['served_vs_naive_docs']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
