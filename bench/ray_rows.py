"""The Ray path against a plain ``score-file`` run, on one server and the same rows.

Starts ``lmscore serve`` (default dtype), writes N short rows (docstrings of Python's
standard library, 60-300 characters) as JSONL, then times, one after the other:

- ``score-file``: the light client's CLI, ``--concurrency C``;
- ``ray remote``: ``score_dataset`` on a local Ray cluster started beforehand (the job
  alone), one actor keeping C requests in flight against the same server;
- ``ray-score CLI``: the whole command, cluster start-up included;
- ``ray in-process`` (after the server has stopped, so the two never share the CPUs):
  ``score_dataset`` with an engine inside one actor of 2 CPUs (Ray gives torch as many
  threads as the actor has CPUs).

Prints rows/s and scored tokens/s of each and Ray's overhead per row against score-file
(ms), and writes the JSON result to bench/results/. A benchmark, not a test.

    .venv/bin/python bench/ray_rows.py [--rows N] [--concurrency C] [--dtype D]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow.parquet as pq
import ray
from docstrings import stdlib_docstrings
from server_process import start_server, stop_server
from stats import machine

from lmscore_client.ray import InProcess, Servers, score_dataset

CLI = str(Path(sys.executable).with_name("lmscore-client"))


def write_rows(path: Path, texts: list[str]) -> list[dict[str, Any]]:
    rows = [{"id": i, "text": text} for i, text in enumerate(texts)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def timed(label: str, rows: int, tokens: int, seconds: float) -> dict[str, Any]:
    result = {"rows_per_s": rows / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}
    print(
        f"{label:<18} {result['rows_per_s']:8.1f} rows/s {result['tokens_per_s']:8.0f} tok/s "
        f"({seconds:.1f} s)",
        flush=True,
    )
    return result


def run_cli(*args: str) -> float:
    """Seconds the ``lmscore-client`` command took."""
    started = time.perf_counter()
    subprocess.run([CLI, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def score_file(url: str, data: Path, out: Path, concurrency: int) -> tuple[float, int]:
    seconds = run_cli(
        "score-file", str(data), "-o", str(out), "--url", url,
        "--concurrency", str(concurrency), "--rows-per-request", "32",
    )  # fmt: skip
    tokens = sum(json.loads(line)["num_scored_tokens"] for line in out.read_text().splitlines())
    return seconds, tokens


def ray_job(
    rows: list[dict[str, Any]], target: Servers | InProcess, concurrency: int, num_cpus: float
) -> float:
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // 256))
    started = time.perf_counter()
    scored = score_dataset(
        ds, target, concurrency=concurrency, batch_size=256, num_cpus=num_cpus
    ).materialize()
    seconds = time.perf_counter() - started
    assert scored.count() == len(rows)
    return seconds


def ray_cli(url: str, data: Path, out: Path, concurrency: int) -> float:
    seconds = run_cli(
        "ray-score", str(data), "-o", str(out), "--url", url,
        "--concurrency", str(concurrency), "--checkpoint", "off",
    )  # fmt: skip
    assert pq.read_table(out).num_rows > 0
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "ray-work"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir()
    texts = stdlib_docstrings(60, 300, args.rows)
    data = work / "rows.jsonl"
    rows = write_rows(data, texts)
    print(f"{len(rows)} rows; {machine()}", flush=True)

    server = start_server(["--dtype", args.dtype, "--max-queue", "100000"], work / "server.log")
    try:
        file_s, tokens = score_file(server.url, data, work / "scored.jsonl", args.concurrency)
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        remote_s = ray_job(rows, Servers([server.url]), args.concurrency, num_cpus=1)
        ray.shutdown()
        cli_s = ray_cli(server.url, data, work / "ray-out", args.concurrency)
    finally:
        stop_server(server)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    # Ray sets OMP_NUM_THREADS to an actor's CPUs: 2, the cores the server had.
    in_process_s = ray_job(rows, InProcess({"dtype": args.dtype}), args.concurrency, num_cpus=2)
    ray.shutdown()

    result = {
        "machine": machine(),
        "rows": len(rows),
        "scored_tokens": tokens,
        "score_file": timed("score-file", len(rows), tokens, file_s),
        "ray_remote": timed("ray remote", len(rows), tokens, remote_s),
        "ray_score_cli": timed("ray-score CLI", len(rows), tokens, cli_s),
        "ray_in_process": timed("ray in-process", len(rows), tokens, in_process_s),
    }
    overhead = {
        key: 1000 * (result[key]["seconds"] - file_s) / len(rows)
        for key in ("ray_remote", "ray_score_cli")
    }
    result["ray_overhead_ms_per_row"] = overhead
    print(
        f"Ray's overhead per row against score-file: remote job {overhead['ray_remote']:.2f} ms,"
        f" whole CLI {overhead['ray_score_cli']:.2f} ms",
        flush=True,
    )
    path = args.out / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
