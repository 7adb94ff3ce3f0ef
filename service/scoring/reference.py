"""Reference profiles: where a score falls in the distribution of a reference corpus.

A profile (made by ``lmscore-client calibrate``) records the model, revision and dtype it
was made with, the metric (``bits_per_char`` by default: higher means more surprising), 101
quantiles of that metric over the reference rows, and an outlier threshold (by default
its 99th percentile). The percentile of a score interpolates linearly between quantiles.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path

METRICS = (
    "bits_per_char",
    "bits_per_byte",
    "ppl",
    "mean_nll",
    "entropy_bits_per_char",
    "mean_entropy",
)
# Metrics of the model's full distribution: a request naming such a profile computes them.
ENTROPY_METRICS = ("entropy_bits_per_char", "mean_entropy")
FORMAT = "lmscore.reference.v1"


class ProfileError(ValueError):
    """A profile file that cannot be used."""


@dataclass(frozen=True)
class ReferenceProfile:
    """A loaded profile: ``points`` are the quantile levels (0..1) and ``values`` the
    metric at each, both ascending."""

    name: str
    model: str
    revision: str
    metric: str
    points: tuple[float, ...]
    values: tuple[float, ...]
    threshold: float
    count: int
    dtype: str | None = None  # the served model's when it was made (None: not recorded)

    def percentile(self, value: float) -> float:
        """Where ``value`` falls in the reference distribution, 0-100 (clamped). A value
        equal to tied quantiles lands in the middle of their levels."""
        points, values = self.points, self.values
        if value < values[0]:
            return 100.0 * points[0]
        if value > values[-1]:
            return 100.0 * points[-1]
        lo, hi = bisect.bisect_left(values, value), bisect.bisect_right(values, value)
        if lo < hi:
            return 100.0 * (points[lo] + points[hi - 1]) / 2.0
        share = (value - values[lo - 1]) / (values[lo] - values[lo - 1])
        return 100.0 * (points[lo - 1] + share * (points[lo] - points[lo - 1]))

    def is_outlier(self, value: float) -> bool:
        """Above the profile's threshold (more surprising than the reference allows)."""
        return value > self.threshold


def load_profile(name: str, path: Path) -> ReferenceProfile:
    """Read and check a profile file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"--reference {name}={path}: cannot read the profile: {exc}") from exc
    try:
        if data.get("format", FORMAT) != FORMAT:
            raise ProfileError(f"unknown format {data.get('format')!r}")
        metric = str(data["metric"])
        if metric not in METRICS:
            raise ProfileError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        pairs = [(float(p), float(v)) for p, v in data["quantiles"]]
        points = tuple(p for p, _ in pairs)
        values = tuple(v for _, v in pairs)
        _check_quantiles(points, values)
        threshold = float(data.get("threshold", _value_at(points, values, 0.99)))
        if not math.isfinite(threshold):
            raise ProfileError("the threshold must be a finite number")
        return ReferenceProfile(
            name=name,
            model=str(data["model"]),
            revision=str(data["revision"]),
            metric=metric,
            points=points,
            values=values,
            threshold=threshold,
            count=int(data.get("count", 0)),
            dtype=str(data["dtype"]) if data.get("dtype") is not None else None,
        )
    except ProfileError as exc:
        raise ProfileError(f"--reference {name}={path}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"--reference {name}={path}: malformed profile ({exc})") from exc


def _check_quantiles(points: tuple[float, ...], values: tuple[float, ...]) -> None:
    """Refuse quantiles a percentile cannot be read from: levels outside [0, 1] (percents
    would give percentiles up to 10000), values that are not finite (NaN sorts anywhere
    and would make every text an inlier)."""
    if not all(math.isfinite(v) for v in values):
        raise ProfileError("quantile values must be finite numbers")
    if not all(0.0 <= p <= 1.0 for p in points):
        raise ProfileError("quantile levels must be fractions between 0 and 1, not percents")
    if len(points) < 2 or list(points) != sorted(points) or list(values) != sorted(values):
        raise ProfileError("quantiles must be at least two ascending [level, value] pairs")


def _value_at(points: tuple[float, ...], values: tuple[float, ...], level: float) -> float:
    right = min(len(points) - 1, bisect.bisect_left(points, level))
    return values[right]
