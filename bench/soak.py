"""Soak and overload runs against a real server started here (loopback only).

``make soak``: a warm-up, then >= 20,000 mixed requests (texts, chats, continuations,
completions, refused requests, callers that leave early); prints the server's RSS, open
file descriptors and threads after each phase, throughput, statuses and latency.
``make soak ARGS="--mode overload"``: far more callers than --max-queue holds, at once.
Every 200 is checked against the same request answered alone. The figures go to
bench/results/{soak,overload}.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

from server_process import start_server, stop_server  # noqa: E402
from small_model import small_model_dir  # noqa: E402
from stats import machine  # noqa: E402
from tolerances import BATCH_INVARIANCE_REL  # noqa: E402
from traffic_runs import overload, soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["soak", "overload"], default="soak")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32, help="callers at once (soak)")
    parser.add_argument("--callers", type=int, default=256, help="callers at once (overload)")
    parser.add_argument("--max-queue", type=int, default=16, help="server --max-queue (overload)")
    parser.add_argument(
        "--model",
        default=None,
        help="'small' (the embedded tokenizer and template on a 2-layer random model, the "
        "soak's default: it exercises the serving stack, not the matmuls), 'default' (the "
        "embedded model, overload's default) or a model directory",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or ("small" if args.mode == "soak" else "default")
    if model == "small":
        model = str(small_model_dir(args.out / "small-model"))
    server_args = ["--model", f"default={model}", "--dtype", "float32"]  # float32: the
    # batch-invariance tolerance every 200 is checked to is float32's
    if args.mode == "overload":
        server_args += ["--max-queue", str(args.max_queue)]
    server = start_server(server_args, args.out / f"{args.mode}-server.log")
    try:
        result: dict[str, Any]
        if args.mode == "soak":
            result = soak(
                server.url,
                server.process.pid,
                total=args.requests,
                warmup=args.warmup,
                concurrency=args.concurrency,
                rel_tol=BATCH_INVARIANCE_REL,
            )
        else:
            result = overload(
                server.url,
                total=args.requests,
                concurrency=args.callers,
                rel_tol=BATCH_INVARIANCE_REL,
            )
    finally:
        stop_server(server)
    result = {"machine": machine(), "mode": args.mode, "server_args": server_args, **result}
    (args.out / f"{args.mode}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
