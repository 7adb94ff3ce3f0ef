"""lmscore benchmark: the server against its peers (naive transformers loop, offline vLLM).

One run scores the same texts — docstrings of Python's standard library: short texts
(60-300 characters) and documents (800-2500) — first through ``lmscore serve`` (started
here, default dtype) with concurrent HTTP clients, then, after the server has stopped, with
each peer in turn (never at the same time: the peers must not compete for the CPUs).
Prints tokens/s, requests/s, latency (ms), batching, peak RSS (MiB) and the ratios, and
writes the JSON result to bench/results/. A benchmark, not a test: numbers depend on the
machine; compare ratios within one run.

    .venv/bin/python bench/run.py [--short N] [--docs N] [--concurrency C] [--dtype D]
        [--backend transformers|vllm] [--model SOURCE] [--device auto|cpu|cuda]
        [--peer naive --peer vllm | --peers naive,vllm | --no-peers]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import httpx
from docstrings import stdlib_docstrings
from peers import default_dtype, model_dir, naive_peer, tokenize, vllm_peer
from report import print_table, ratios
from server_process import start_server, stop_server
from server_rows import server_rows
from stats import ForeignLoad, machine

PEERS = ("naive", "vllm", "vllm-eager")
DEFAULT_PEERS = ("naive", "vllm")


def parse_args() -> argparse.Namespace:
    """The command line; corpus sizes in texts, concurrency in requests in flight."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=300, help="short texts (60-300 chars)")
    parser.add_argument("--docs", type=int, default=60, help="documents (800-2500 chars)")
    parser.add_argument("--concurrency", type=int, default=32, help="for the 1/request rows")
    parser.add_argument("--texts-per-request", type=int, default=16)
    parser.add_argument("--rss-docs", type=int, default=64, help="documents in flight for RSS")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--model", default="default", help="as lmscore serve --model takes it")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile", default="off", choices=["off", "on", "auto"], help="the server's --compile"
    )
    parser.add_argument("--peer", action="append", choices=PEERS, help="repeatable")
    parser.add_argument(
        "--peers", help="comma-separated, e.g. naive,vllm,vllm-eager (default: naive,vllm)"
    )
    parser.add_argument("--no-peers", action="store_true", help="measure only the server")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    return parser.parse_args()


def chosen_peers(args: argparse.Namespace) -> list[str]:
    """The peers to run: none with --no-peers, else those named (in PEERS order), else
    DEFAULT_PEERS."""
    if args.no_peers:
        return []
    named = set(args.peer or []) | {p.strip() for p in (args.peers or "").split(",") if p.strip()}
    unknown = named - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}; known: {PEERS}")
    return [p for p in PEERS if p in named] if named else list(DEFAULT_PEERS)


def run_server(
    args: argparse.Namespace, short: list[str], docs: list[str], rss_docs: list[str]
) -> dict[str, Any]:
    """Start ``lmscore serve``, run every server row, stop it; ``{"error": ...}`` if it fails."""
    log = args.out / "server.log"
    # Generous limits: the benchmark measures throughput, not admission control.
    flags = ["--dtype", args.dtype, "--backend", args.backend, "--device", args.device]
    flags += ["--compile", args.compile]
    flags += ["--model", f"default={args.model}"]
    flags += ["--request-timeout-s", "900", "--max-queue", "100000"]
    try:
        server = start_server(flags, log, timeout_s=600)
    except RuntimeError as exc:
        tail = "\n".join(str(exc).splitlines()[-6:])
        print(f"server failed to start (log: {log}):\n{tail}", flush=True)
        return {"error": f"server failed to start, see {log}"}
    try:
        dtype = httpx.get(f"{server.url}/v1/models").json()["data"][0]["dtype"]
        print(f"server ready ({server.url}, dtype {dtype}); measuring", flush=True)
        result = server_rows(server.url, server.process.pid, short, docs, rss_docs, args)
        return {"dtype": dtype, **result}
    except (httpx.HTTPError, aiohttp.ClientError, OSError, KeyError) as exc:
        print(f"server run failed: {exc!r} (log: {log})", flush=True)
        return {"dtype": None, "error": f"server run failed: {exc!r}, see {log}"}
    finally:
        stop_server(server)


def run_peers(
    names: list[str], args: argparse.Namespace, dtype: str, short: list[str], docs: list[str]
) -> dict[str, Any]:
    """Each named peer on the same token ids as the server's texts, one after another."""
    if not names:
        return {}
    path = model_dir(args.model)
    corpora = {"short": tokenize(path, short), "docs": tokenize(path, docs)}
    results: dict[str, Any] = {}
    for name in names:
        print(f"peer {name}: scoring", flush=True)
        with ForeignLoad() as load:
            if name == "naive":
                results[name] = naive_peer(path, dtype, corpora, args.device)
            else:
                eager = name == "vllm-eager"
                results[name] = vllm_peer(path, dtype, corpora, args.out, enforce_eager=eager)
        results[name]["foreign_cpu_share"] = load.share
        if "skipped" in results[name]:
            print(results[name]["skipped"], flush=True)
    return results


def main() -> int:
    """Server rows, then peers, then the table; the JSON goes to ``--out``."""
    args = parse_args()
    started = time.perf_counter()
    peers = chosen_peers(args)
    short = stdlib_docstrings(60, 300, args.short)
    all_docs = stdlib_docstrings(800, 2500, max(args.docs, args.rss_docs))
    docs = all_docs[: args.docs]
    rss_docs = [all_docs[i % len(all_docs)] for i in range(args.rss_docs)]
    args.out.mkdir(parents=True, exist_ok=True)

    with ForeignLoad() as load:
        server = run_server(args, short, docs, rss_docs)
    server["foreign_cpu_share"] = load.share
    dtype = server.get("dtype") or default_dtype(args.dtype, args.device)
    summary: dict[str, Any] = {
        "config": {
            "backend": args.backend,
            "model": args.model,
            "device": args.device,
            "dtype": dtype,
            "compile": args.compile,
            "machine": machine(),
            "concurrency": args.concurrency,
            "texts_per_request": args.texts_per_request,
            "peers": peers,
        },
        "server": server,
        "peers": run_peers(peers, args, dtype, short, docs),
    }
    summary["corpus"] = corpus_stats(summary, short, docs)
    summary["foreign_cpu_share"] = {
        "server": server["foreign_cpu_share"],
        **{name: peer["foreign_cpu_share"] for name, peer in summary["peers"].items()},
    }
    summary["ratios"] = ratios(summary)
    summary["wall_s"] = time.perf_counter() - started
    out_file = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_file.write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"\nwritten {out_file} ({summary['wall_s']:.0f} s)")
    return 0 if "error" not in server else 1


def corpus_stats(summary: dict[str, Any], short: list[str], docs: list[str]) -> dict[str, Any]:
    """Texts and tokens per corpus (tokens as the server or, failing that, a peer counted)."""
    rows = summary["server"].get("rows", {})
    tokens: dict[str, int | None] = {}
    for key, row_key in (("short", "short_1_per_request"), ("docs", "docs_1_per_request")):
        candidates = [rows.get(row_key), *(p.get(key) for p in summary["peers"].values())]
        tokens[key] = next((c["tokens"] for c in candidates if c and "tokens" in c), None)
    return {
        "short_texts": len(short),
        "short_tokens": tokens["short"],
        "documents": len(docs),
        "document_tokens": tokens["docs"],
    }


if __name__ == "__main__":
    sys.exit(main())
