"""End-of-run report of the CLI: counts, rates, quantiles and a text histogram of the
chosen metric, and an optional matplotlib histogram."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmscore_client.profile import quantile

METRICS = (
    "ppl",
    "mean_nll",
    "bits_per_byte",
    "bits_per_char",
    "entropy_bits_per_char",
    "mean_entropy",
)
# Metrics the server computes only when asked for the full distribution's entropy.
ENTROPY_METRICS = ("entropy_bits_per_char", "mean_entropy")
# Extra result fields score-file can add (--fields), by the option that asks for them.
EXTRA_FIELDS = {
    "entropy": ("mean_entropy", "entropy_bits_per_char"),
    "min_k": ("min_k_logprob", "min_k_plus_plus"),
}
SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99)
BAR = "█"


@dataclass
class Stats:
    """Counts of one run. ``rows`` = kept + dropped + rejected + errors; ``tokens`` is
    scored tokens; ``values`` holds the metric of every scored row (kept or dropped)."""

    rows: int = 0
    kept: int = 0
    dropped: int = 0
    rejected: int = 0  # refused by the server (4xx) or unreadable rows
    errors: int = 0  # failed on the server side (5xx)
    tokens: int = 0
    values: array[float] = field(default_factory=lambda: array("d"))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def histogram(values: Sequence[float], log: bool, bins: int = 20, width: int = 40) -> list[str]:
    """Text bars: one line per bin, ``[low, high)  bar  count``. Log-spaced bins when
    ``log`` and every value is positive."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return []
    lo, hi = min(finite), max(finite)
    log = log and lo > 0
    if hi == lo:
        return [f"  [{_fmt(lo)}, {_fmt(hi)}]  {BAR * width}  {len(finite)}"]
    a, b = (math.log(lo), math.log(hi)) if log else (lo, hi)
    edges = [a + (b - a) * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for v in finite:
        x = math.log(v) if log else v
        counts[min(bins - 1, int((x - a) / (b - a) * bins))] += 1
    if log:
        edges = [math.exp(e) for e in edges]
    top = max(counts)
    labels = [f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])})" for i in range(bins)]
    pad = max(len(label) for label in labels)
    lines = []
    for label, count in zip(labels, counts, strict=True):
        bar = BAR * (round(width * count / top) if count else 0)
        lines.append(f"  {label:<{pad}}  {bar:<{width}}  {count}")
    return lines


def report(stats: Stats, metric: str, elapsed_s: float, title: str = "score-file") -> str:
    """The multi-line summary printed on stderr at the end of a run."""
    rate = stats.rows / elapsed_s if elapsed_s > 0 else 0.0
    tok_rate = stats.tokens / elapsed_s if elapsed_s > 0 else 0.0
    lines = [
        f"{title}: rows {stats.rows}, kept {stats.kept}, dropped {stats.dropped}, "
        f"rejected {stats.rejected}, errors {stats.errors}, tokens {stats.tokens} scored",
        f"  {elapsed_s:.1f} s, {rate:.1f} rows/s, {tok_rate:.0f} tokens/s",
    ]
    ordered = sorted(v for v in stats.values if math.isfinite(v))
    if ordered:
        qs = ", ".join(f"p{round(q * 100)} {_fmt(quantile(ordered, q))}" for q in SUMMARY_QUANTILES)
        lines.append(f"  {metric} over {len(ordered)} scored rows: {qs}")
        scale = "log-spaced bins" if metric == "ppl" else "linear bins"
        lines.append(f"  histogram of {metric} ({scale}):")
        lines.extend(histogram(ordered, log=metric == "ppl"))
    return "\n".join(lines)


def plot(values: Sequence[float], metric: str, path: str) -> str:
    """Write a histogram PNG with matplotlib; return a one-line message for stderr."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            f"--plot {path}: matplotlib is not installed "
            "(pip install 'lmscore-client[plot]'); no plot written"
        )
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"--plot {path}: no scored rows; no plot written"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if metric == "ppl" and min(finite) > 0 and max(finite) > min(finite):
        lo, hi = math.log10(min(finite)), math.log10(max(finite))
        ax.hist(finite, bins=[10 ** (lo + (hi - lo) * i / 50) for i in range(51)])
        ax.set_xscale("log")
    else:
        ax.hist(finite, bins=50)
    ax.set_xlabel(metric)
    ax.set_ylabel("rows")
    ax.set_title(f"{metric} over {len(finite)} rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot written to {path}"
