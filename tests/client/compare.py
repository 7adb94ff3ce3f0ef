"""Approximate equality of result dataclasses (floats within the contract's batch tolerance:
every use compares two requests, i.e. two forward passes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL


def assert_close(a: Any, b: Any, rel: float = BATCH_INVARIANCE_REL, path: str = "") -> None:
    """Recursively equal, floats within ``rel`` (relative) or ``BATCH_INVARIANCE_ABS``."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_close(getattr(a, f.name), getattr(b, f.name), rel, f"{path}.{f.name}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {a!r} != {b!r}"
        for key in a:
            assert_close(a[key], b[key], rel, f"{path}.{key}")
    elif isinstance(a, float) and not isinstance(b, bool) and isinstance(b, int | float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=BATCH_INVARIANCE_ABS), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
