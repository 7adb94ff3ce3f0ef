"""The forward pass alone, in-process: tok/s and accuracy by precision and batch layout.

Scores the same English texts (stdlib docstrings) through the transformers backend with
each ``--dtype`` and ``--attention`` choice, in batches of ``--batch`` texts, and reports
per combination: forward tok/s (real tokens) and how far each text's PPL moves from
float32 ragged (relative difference: median, p90, max, and the token count of the worst
text). No server, no HTTP: this isolates the model. A benchmark, not a test.

    .venv/bin/python bench/forward.py [--texts 256] [--batch 32]
        [--dtypes float32,bfloat16,bf16-mixed] [--layouts ragged,padded]
        [--device auto|cpu|cuda] [--model SOURCE] [--compile off,on]

Each backend is loaded (and warmed up: compiled layers compile then) on a thread that
ends before the timing starts, as the server does: a thread that ran torch's parallel
work keeps an OpenMP pool, and a second live pool slows the forward passes (NOTES).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docstrings import stdlib_docstrings
from peers import model_dir

from service.backends.base import ForwardItem
from service.backends.hf import HFBackend
from service.tasks import on_own_thread


def score(backend: HFBackend, items: list[ForwardItem], batch: int) -> tuple[list[float], float]:
    """Per-text PPL (exp of mean NLL, nats) and forward tok/s (real tokens)."""
    backend.forward(items[:batch])  # warm-up
    started = time.perf_counter()
    ppls: list[float] = []
    for k in range(0, len(items), batch):
        for result in backend.forward(items[k : k + batch]):
            ppls.append(math.exp(-float(np.mean(result.logprobs.astype(np.float64)))))
    elapsed = time.perf_counter() - started
    return ppls, sum(len(it.input_ids) for it in items) / elapsed


def load(path: Path, **options: str) -> HFBackend:
    """An ``HFBackend`` loaded and warmed up on a thread that then ends, as the server
    loads models (``service.tasks.on_own_thread``)."""

    def run() -> HFBackend:
        backend = HFBackend(path, **options)
        backend.warmup()
        return backend

    return asyncio.run(on_own_thread("load", run))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--chars", default="60-300", help="text length range in characters")
    parser.add_argument("--dtypes", default="float32,bfloat16,bf16-mixed")
    parser.add_argument("--layouts", default="ragged,padded")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="default", help="as lmscore serve --model takes it")
    parser.add_argument("--compile", default="off", help="comma-separated: off,on")
    args = parser.parse_args()
    path = model_dir(args.model)
    low, high = (int(n) for n in args.chars.split("-"))
    texts = stdlib_docstrings(low, high, args.texts)
    rows = {}
    reference: list[float] | None = None
    dtypes = ["float32", *(d for d in args.dtypes.split(",") if d != "float32")]
    layouts, compiles = args.layouts.split(","), args.compile.split(",")
    combos = [(d, lay, c) for d in dtypes for lay in layouts for c in compiles]
    for dtype, layout, compiled in combos:
        backend = load(
            path, dtype=dtype, device=args.device, attention=layout, compile_layers=compiled
        )
        ids = [tuple(backend.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        kept = [i for i in ids if len(i) > 1]
        items = [ForwardItem(i, 1) for i in kept]
        ppls, tok_s = score(backend, items, args.batch)
        if reference is None:
            reference = ppls
        diffs = np.abs(np.array(ppls) / np.array(reference) - 1)
        worst = int(np.argmax(diffs))
        name = f"{dtype}/{layout}" + ("/compiled" if backend.compiled else "")
        rows[name] = {
            "tok_s": round(tok_s, 1),
            "ppl_rel_diff_median": float(np.median(diffs)),
            "ppl_rel_diff_p90": float(np.percentile(diffs, 90)),
            "ppl_rel_diff_max": float(diffs[worst]),
            "worst_text_tokens": len(kept[worst]),
        }
        print(name, json.dumps(rows[name]), flush=True)
    print(f"{len(items)} texts, {args.batch} per forward pass; PPL differences vs the first row")
    print(f"{'dtype/layout':<28} {'tok/s':>7} {'PPL diff median':>16} {'p90':>7} {'max':>7}")
    for name, row in rows.items():
        print(
            f"{name:<28} {row['tok_s']:7.0f} {row['ppl_rel_diff_median']:16.2%} "
            f"{row['ppl_rel_diff_p90']:7.2%} {row['ppl_rel_diff_max']:7.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
