"""Reference-profile maths: quantiles, percentile and the outlier threshold."""

from __future__ import annotations

import itertools
import random

import pytest

from lmscore_client.profile import (
    FORMAT,
    build_profile,
    is_outlier,
    percentile,
    quantile,
    quantiles,
)


def test_quantile_by_hand() -> None:
    values = [10.0, 1.0, 4.0, 3.0]  # sorted: 1 3 4 10
    ordered = sorted(values)
    assert quantile(ordered, 0.0) == 1.0
    assert quantile(ordered, 1.0) == 10.0
    assert quantile(ordered, 0.5) == pytest.approx(3.5)  # h = 1.5: between 3 and 4
    assert quantile(ordered, 0.25) == pytest.approx(2.5)  # h = 0.75: 3 * 0.75 + 1 * 0.25
    assert quantile(ordered, 0.9) == pytest.approx(4 + 0.7 * 6)  # h = 2.7
    assert quantile([7.0], 0.3) == 7.0
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_quantiles_table_shape() -> None:
    table = quantiles(range(101))
    assert len(table) == 101
    assert [p for p, _ in table][:3] == [0.0, 0.01, 0.02]
    assert table[-1] == [1.0, 100.0]
    assert all(v == pytest.approx(p * 100) for p, v in table)


def test_quantiles_match_numpy_default() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 57, 1000):
        values = [rng.lognormvariate(1.0, 0.8) for _ in range(n)]
        ours = [v for _, v in quantiles(values)]
        theirs = np.quantile(values, np.linspace(0, 1, 101))
        assert ours == pytest.approx(list(theirs), rel=1e-12, abs=1e-12)


def _profile(values: list[float], threshold_quantile: float = 0.99) -> dict:
    return build_profile(
        values, model="m", revision="sha256:x", metric="bits_per_char", source="ref.jsonl",
        threshold_quantile=threshold_quantile,
    )  # fmt: skip


def test_percentile_inverts_quantiles_and_clamps() -> None:
    profile = _profile([float(v) for v in range(1, 102)])  # quantile p -> 1 + 100 p
    assert percentile(profile, 1.0) == pytest.approx(0.0)
    assert percentile(profile, 51.0) == pytest.approx(50.0)
    assert percentile(profile, 26.5) == pytest.approx(25.5)
    assert percentile(profile, 101.0) == pytest.approx(100.0)
    assert percentile(profile, -1e9) == 0.0
    assert percentile(profile, 1e9) == 100.0


def test_percentile_matches_numpy_interp_without_ties() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    profile = _profile([rng.gauss(2.0, 0.5) for _ in range(500)])
    ps = [100 * p for p, _ in profile["quantiles"]]
    xs = [v for _, v in profile["quantiles"]]
    for value in [rng.uniform(0.0, 4.0) for _ in range(300)] + xs:
        assert percentile(profile, value) == pytest.approx(float(np.interp(value, xs, ps)))


def test_percentile_is_monotone() -> None:
    rng = random.Random(11)
    profile = _profile([round(rng.expovariate(1.0), 1) for _ in range(200)])  # many ties
    grid = [i / 100 for i in range(-100, 1000)]
    got = [percentile(profile, v) for v in grid]
    assert all(0.0 <= g <= 100.0 for g in got)
    assert all(a <= b for a, b in itertools.pairwise(got))


def test_percentile_of_a_flat_stretch_is_its_middle() -> None:
    # quantiles of [1, 2, 2, 2, 3]: values 1 (p 0) .. 2 (p 0.25..0.75) .. 3 (p 1)
    profile = _profile([1.0, 2.0, 2.0, 2.0, 3.0])
    assert percentile(profile, 2.0) == pytest.approx(50.0)
    assert percentile(profile, 1.5) == pytest.approx(12.5)
    assert percentile(profile, 2.5) == pytest.approx(87.5)
    constant = _profile([4.0] * 10)
    assert percentile(constant, 4.0) == pytest.approx(50.0)
    assert percentile(constant, 3.9) == 0.0
    assert percentile(constant, 4.1) == 100.0


def test_threshold_and_outliers() -> None:
    values = [float(v) for v in range(1, 101)]  # q99 = 1 + 99 * 0.99 = 99.01
    profile = _profile(values)
    assert profile["threshold"] == pytest.approx(99.01)
    assert profile["threshold_quantile"] == 0.99
    assert not is_outlier(profile, 99.0)
    assert not is_outlier(profile, profile["threshold"])
    assert is_outlier(profile, 99.5)
    assert _profile(values, 0.5)["threshold"] == pytest.approx(50.5)


def test_profile_fields() -> None:
    profile = _profile([3.0, 1.0, 2.0])
    assert profile["format"] == FORMAT
    assert profile["count"] == 3
    assert (profile["model"], profile["revision"], profile["metric"]) == (
        "m", "sha256:x", "bits_per_char",
    )  # fmt: skip
    assert profile["source"] == "ref.jsonl"
    assert profile["created_at"].endswith("Z")
    assert profile["quantiles"][0] == [0.0, 1.0]
    assert profile["quantiles"][-1] == [1.0, 3.0]
    with pytest.raises(ValueError):
        _profile([])
