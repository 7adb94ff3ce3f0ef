"""Hypothesis settings the fuzz tests share: reproducible in CI, bounded in time."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def fuzz_settings(max_examples: int) -> settings:
    """Derandomized (the same examples on every run), no example database, no deadline
    (a scoring call on two cores may take a while)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
