"""Reference profiles: loading, percentile interpolation, outlier threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.scoring.reference import ProfileError, ReferenceProfile, load_profile


def make(values: list[float], threshold: float | None = None) -> ReferenceProfile:
    points = tuple(i / (len(values) - 1) for i in range(len(values)))
    return ReferenceProfile(
        name="p",
        model="default",
        revision="sha256:x",
        metric="bits_per_char",
        points=points,
        values=tuple(values),
        threshold=values[-2] if threshold is None else threshold,
        count=100,
    )


def test_percentile_interpolates_between_quantiles() -> None:
    profile = make([1.0, 2.0, 3.0, 5.0, 9.0])  # levels 0, .25, .5, .75, 1
    assert profile.percentile(2.0) == pytest.approx(25.0)
    assert profile.percentile(2.5) == pytest.approx(37.5)
    assert profile.percentile(4.0) == pytest.approx(62.5)
    assert profile.percentile(7.0) == pytest.approx(87.5)


def test_percentile_clamps_and_is_monotone() -> None:
    profile = make([1.0, 2.0, 3.0, 5.0, 9.0])
    assert profile.percentile(-10.0) == 0.0
    assert profile.percentile(1.0) == 0.0
    assert profile.percentile(9.0) == 100.0
    assert profile.percentile(1e9) == 100.0
    grid = [0.5 + i * 0.05 for i in range(200)]
    got = [profile.percentile(v) for v in grid]
    assert got == sorted(got)


def test_ties_land_in_the_middle_of_the_flat_stretch() -> None:
    profile = make([1.0, 2.0, 2.0, 2.0, 3.0])
    assert profile.percentile(2.0) == pytest.approx(50.0)
    ends = make([1.0, 1.0, 1.0, 2.0, 3.0])
    assert ends.percentile(1.0) == pytest.approx(25.0)


def test_outlier_is_strictly_above_the_threshold() -> None:
    profile = make([1.0, 2.0, 3.0, 5.0, 9.0], threshold=5.0)
    assert not profile.is_outlier(5.0)
    assert profile.is_outlier(5.0001)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    return path


def valid() -> dict[str, object]:
    return {
        "format": "lmscore.reference.v1",
        "model": "default",
        "revision": "sha256:x",
        "metric": "bits_per_char",
        "count": 3,
        "quantiles": [[0.0, 1.0], [0.5, 2.0], [0.99, 3.0], [1.0, 4.0]],
        "threshold": 3.0,
    }


def test_load_profile(tmp_path: Path) -> None:
    profile = load_profile("prose", write(tmp_path, valid()))
    assert (profile.name, profile.model, profile.metric, profile.threshold) == (
        "prose",
        "default",
        "bits_per_char",
        3.0,
    )
    assert profile.percentile(1.5) == pytest.approx(25.0)


def test_threshold_defaults_to_the_99th_percentile(tmp_path: Path) -> None:
    data = valid()
    del data["threshold"]
    assert load_profile("p", write(tmp_path, data)).threshold == 3.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "vibes"}, "unknown metric"),
        ({"format": "other"}, "unknown format"),
        ({"quantiles": [[0.0, 2.0], [1.0, 1.0]]}, "ascending"),
        ({"quantiles": [[0.0, 1.0]]}, "at least two"),
        ({"model": None, "quantiles": "x"}, "malformed"),
        ({"quantiles": []}, "at least two"),
        ({"quantiles": [[0, 1.0], [50, 2.0], [100, 3.0]]}, "not percents"),
        ({"quantiles": [[0.0, 1.0], [-0.1, 2.0]]}, "between 0 and 1"),
        ({"quantiles": [[0.0, 1.0], [0.5, float("nan")], [1.0, 3.0]]}, "finite"),
        ({"quantiles": [[0.0, 1.0], [1.0, float("inf")]]}, "finite"),
        ({"threshold": float("nan")}, "threshold must be a finite"),
    ],
)
def test_bad_profiles_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile("p", write(tmp_path, {**valid(), **change}))


def test_unreadable_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile("p", tmp_path / "missing.json")
