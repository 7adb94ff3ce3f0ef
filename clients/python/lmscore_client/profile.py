"""Reference profiles: the quantiles of a metric over reference texts, and where a new
score falls in them. Pure Python (no numpy); the server implements the same formulas.

* ``quantiles``: linear interpolation between order statistics (numpy's default, "type 7"):
  for q in [0, 1], h = (n - 1) q, value = x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]).
* ``percentile``: 100 times the piecewise-linear inverse of the quantile table, clamped to
  [0, 100] (``numpy.interp(value, values, 100 * ps)`` where the table values are distinct);
  a value equal to table values (a flat stretch, from tied reference scores) gets the
  middle of their levels.
* ``is_outlier``: value > the profile's threshold.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

FORMAT = "lmscore.reference.v1"


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of ascending ``sorted_values`` (linear interpolation)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    return a + (h - lo) * (b - a)


def quantiles(values: Iterable[float], points: int = 101) -> list[list[float]]:
    """``[[p, value], ...]`` for p = 0, 1/(points-1), ..., 1 (0.00..1.00 by default)."""
    if points < 2:
        raise ValueError("points must be at least 2")
    ordered = sorted(float(v) for v in values)
    ps = [i / (points - 1) for i in range(points)]
    return [[p, quantile(ordered, p)] for p in ps]


def percentile(profile: Mapping[str, Any], value: float) -> float:
    """Where ``value`` falls in the profile's distribution, 0-100 (clamped)."""
    table = profile["quantiles"]
    ps = [float(p) for p, _ in table]
    xs = [float(v) for _, v in table]
    if value < xs[0]:
        return 100.0 * ps[0]
    if value > xs[-1]:
        return 100.0 * ps[-1]
    lo, hi = bisect.bisect_left(xs, value), bisect.bisect_right(xs, value)
    if lo < hi:  # equal to table values xs[lo:hi]: the middle of that stretch
        return 100.0 * (ps[lo] + ps[hi - 1]) / 2.0
    j = lo - 1  # xs[j] < value < xs[lo]
    share = (value - xs[j]) / (xs[lo] - xs[j])
    return 100.0 * (ps[j] + share * (ps[lo] - ps[j]))


def is_outlier(profile: Mapping[str, Any], value: float) -> bool:
    """Whether ``value`` is above the profile's threshold."""
    return value > float(profile["threshold"])


def build_profile(
    values: Sequence[float],
    *,
    model: str,
    revision: str,
    metric: str,
    source: str,
    threshold_quantile: float = 0.99,
    skipped: int = 0,
    dtype: str | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """The profile JSON ``lmscore-client calibrate`` writes (``count`` values used).
    ``dtype`` and ``backend`` are the served model's, when known: a server refuses a
    profile made in another dtype."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("no reference values to calibrate on")
    return (
        {
            "format": FORMAT,
            "model": model,
            "revision": revision,
            "metric": metric,
            "count": len(ordered),
            "skipped": skipped,
            "quantiles": quantiles(ordered),
            "threshold": quantile(ordered, threshold_quantile),
            "threshold_quantile": threshold_quantile,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source,
        }
        | ({"dtype": dtype} if dtype else {})
        | ({"backend": backend} if backend else {})
    )
