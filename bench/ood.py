"""Out-of-distribution measurement: per-token PPL against bits per character and entropy.

Starts ``lmscore serve`` (default dtype), calibrates a reference on in-domain English
prose (docstrings of Python's standard library), then scores held-out English, other
languages (bench/other_languages.json) and gibberish (held-out English, characters
shuffled). Prints, per group, the AUROC of English-vs-group for each metric and the share
flagged as outlier by the profile (threshold: the reference's 99th percentile) on the
profile's metric (``--metric``, default bits_per_char).

    .venv/bin/python bench/ood.py [--reference N] [--held-out N] [--metric M]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
sys.path.insert(0, str(HERE))

from docstrings import stdlib_docstrings  # noqa: E402
from server_process import start_server, stop_server  # noqa: E402

METRICS = ("ppl", "bits_per_byte", "bits_per_char", "entropy_bits_per_char")


def auroc(inside: list[float], outside: list[float]) -> float:
    """P(an outside score > an inside score), ties counting half."""
    wins = sum((o > i) + 0.5 * (o == i) for o in outside for i in inside)
    return wins / (len(inside) * len(outside))


def score(url: str, texts: list[str], reference: str | None = None) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), 32):
        body: dict[str, Any] = {"texts": texts[start : start + 32], "return_entropy": True}
        if reference:
            body["reference"] = reference
        response = httpx.post(f"{url}/v1/score/text", json=body, timeout=600)
        response.raise_for_status()
        results.extend(response.json()["results"])
    return results


def quantile_table(values: list[float]) -> list[list[float]]:
    ordered = sorted(values)
    table = []
    for i in range(101):
        position = i / 100 * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        table.append([i / 100, ordered[low] + (ordered[high] - ordered[low]) * (position - low)])
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--metric", default="bits_per_char", choices=METRICS[1:])
    args = parser.parse_args()
    english = stdlib_docstrings(120, 600, args.reference + args.held_out)
    calibration, held_out = english[: args.reference], english[args.reference :]
    rng = random.Random(0)
    groups: dict[str, list[str]] = json.loads((HERE / "other_languages.json").read_text())
    groups["gibberish"] = ["".join(rng.sample(t, len(t))) for t in held_out[:30]]
    work = Path("bench/results")
    work.mkdir(parents=True, exist_ok=True)

    server = start_server([], work / "ood-server.log")
    try:
        reference = score(server.url, calibration)
        card = httpx.get(f"{server.url}/v1/models").json()["data"][0]
        values = [r[args.metric] for r in reference]
        profile = {
            "format": "lmscore.reference.v1",
            "model": "default",
            "revision": card["revision"],
            "dtype": card["dtype"],
            "metric": args.metric,
            "count": len(values),
            "quantiles": quantile_table(values),
            "threshold_quantile": 0.99,
            "threshold": quantile_table(values)[99][1],
        }
        (work / "ood-profile.json").write_text(json.dumps(profile))
    finally:
        stop_server(server)
    server = start_server(
        ["--reference", f"prose={work / 'ood-profile.json'}"], work / "ood-server.log"
    )
    try:
        base = score(server.url, held_out, "prose")
        scored = {name: score(server.url, texts, "prose") for name, texts in groups.items()}
    finally:
        stop_server(server)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(f"reference: {len(calibration)} English docstrings; held-out English: {len(held_out)}")
    print(
        f"{'group':<12} {'n':>4} {'median PPL':>11} "
        + " ".join(f"{'AUROC ' + m:>20}" for m in METRICS)
        + f" {'outliers':>9}"
    )
    rows = [("english", base), *scored.items()]
    for name, results in rows:
        ppl = median([r["ppl"] for r in results])
        aurocs = [
            auroc([r[m] for r in base], [r[m] for r in results])
            if name != "english"
            else float("nan")
            for m in METRICS
        ]
        flagged = sum(r["is_outlier"] for r in results) / len(results)
        print(
            f"{name:<12} {len(results):>4} {ppl:>11.1f} "
            + " ".join(f"{a:>20.3f}" for a in aurocs)
            + f" {flagged:>9.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
