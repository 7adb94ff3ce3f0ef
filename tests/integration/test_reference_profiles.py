"""--reference on the real server: a profile of the served revision is used; one made
with another revision is refused at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from corpus import ENGLISH, GIBBERISH, OTHER
from server_process import start_server, stop_server

from lmscore_client.profile import percentile

pytestmark = pytest.mark.integration


def profile_from(
    http: httpx.Client, texts: list[str], revision: str | None = None
) -> dict[str, object]:
    """A profile made the simple way: every reference score as its own quantile level."""
    body = http.post("/v1/score/text", json={"texts": texts}).json()
    values = sorted(r["bits_per_char"] for r in body["results"])
    levels = [i / (len(values) - 1) for i in range(len(values))]
    return {
        "format": "lmscore.reference.v1",
        "model": "default",
        "revision": revision or body["model_revision"],
        "metric": "bits_per_char",
        "count": len(values),
        "quantiles": [[p, v] for p, v in zip(levels, values, strict=True)],
        "threshold": values[-1],
    }


def test_reference_flags_gibberish_and_refuses_other_revisions(
    http: httpx.Client, tmp_path: Path
) -> None:
    good = tmp_path / "prose.json"
    good.write_text(json.dumps(profile_from(http, ENGLISH)))
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(profile_from(http, ENGLISH, revision="sha256:" + "0" * 64)))

    with pytest.raises(RuntimeError, match="calibrate it again"):
        start_server(
            ["--dtype", "float32", "--reference", f"stale={stale}"], tmp_path / "stale.log"
        )

    server = start_server(
        ["--dtype", "float32", "--reference", f"prose={good}"], tmp_path / "ok.log"
    )
    try:
        texts = [ENGLISH[0], *GIBBERISH, OTHER[0]]
        body = httpx.post(
            f"{server.url}/v1/score/text", json={"texts": texts, "reference": "prose"}, timeout=120
        ).json()
        english, *odd = body["results"]
        # Where its own score falls in the profile, by the client's implementation of the
        # same formula (an independent one): the same number.
        profile = json.loads(good.read_text())
        want = percentile(profile, english["bits_per_char"])
        assert english["is_outlier"] is False
        assert english["percentile"] == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert all(r["is_outlier"] is True and r["percentile"] == 100.0 for r in odd)
    finally:
        assert stop_server(server) == 0
