"""Requests naming a reference profile get percentile and is_outlier; profiles made with
another model or revision are refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.engine import Engine
from service.references import check_profile, with_reference
from service.schemas import TextScoreRequest
from service.scoring.reference import ProfileError, ReferenceProfile

ASYNC = pytest.mark.asyncio(loop_scope="session")

TEXTS = ["the cat sat on the mat", "zq xv jj kk qq", "hello there"]


def profile(model: str = "default", revision: str = "sha256:test") -> ReferenceProfile:
    return ReferenceProfile(
        name="prose",
        model=model,
        revision=revision,
        metric="bits_per_char",
        points=(0.0, 0.5, 1.0),
        values=(0.0, 4.0, 8.0),
        threshold=6.0,
        count=3,
    )


@ASYNC
async def test_results_carry_percentile_and_outlier(
    engine_factory: Callable[..., Engine],
) -> None:
    engine = engine_factory()
    engine.references["prose"] = profile()
    plain = (await engine.score_text(TextScoreRequest(texts=TEXTS))).response
    with_ref = (await engine.score_text(TextScoreRequest(texts=TEXTS, reference="prose"))).response
    for a, b in zip(plain.results, with_ref.results, strict=True):
        assert a.percentile is None and a.is_outlier is None
        assert b.bits_per_char is not None
        assert b.percentile == pytest.approx(profile().percentile(b.bits_per_char))
        assert b.is_outlier == (b.bits_per_char > 6.0)
        assert 0.0 <= b.percentile <= 100.0


@ASYNC
async def test_rest_reference_errors_and_fields(
    engine_factory: Callable[..., Engine], client_factory: Callable[..., httpx.AsyncClient]
) -> None:
    http = client_factory()
    engine: Any = http._transport.app.state.engine  # type: ignore[attr-defined]
    engine.references["prose"] = profile()
    ok = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "prose"})
    assert ok.status_code == 200
    assert all({"percentile", "is_outlier"} <= set(r) for r in ok.json()["results"])
    plain = await http.post("/v1/score/text", json={"texts": TEXTS})
    assert all("percentile" not in r for r in plain.json()["results"])
    unknown = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "reference"
    engine.references["other"] = profile(model="another")
    wrong = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "other"})
    assert wrong.status_code == 422 and "another" in wrong.json()["error"]["message"]


def test_profiles_from_another_model_or_revision_are_refused() -> None:
    class Served:
        revision = "sha256:test"

    check_profile(profile(), {"default": Served()})
    with pytest.raises(ProfileError, match="not served"):
        check_profile(profile(model="other"), {"default": Served()})
    with pytest.raises(ProfileError, match="calibrate it again"):
        check_profile(profile(revision="sha256:old"), {"default": Served()})


def test_no_profile_leaves_results_alone() -> None:
    sentinel: Any = object()
    assert with_reference(sentinel, None) is sentinel
