"""Several resident models in one server, each with its own options (here: dtype)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from corpus import ENGLISH
from server_process import start_server, stop_server

pytestmark = pytest.mark.integration


def test_the_embedded_model_in_float32_and_bfloat16_side_by_side(tmp_path: Path) -> None:
    models = ["--model", "fp32=default?dtype=float32", "--model", "bf16=default?dtype=bfloat16"]
    server = start_server([*models, "--max-context", "256"], tmp_path / "log")
    try:
        cards = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
        assert {name: card["dtype"] for name, card in cards.items()} == {
            "fp32": "float32",
            "bf16": "bfloat16",
        }
        assert cards["fp32"]["revision"] == cards["bf16"]["revision"]  # same weights
        texts = ENGLISH[:3]
        ppl = {}
        for name in cards:
            body = {"model": name, "texts": texts}
            response = httpx.post(f"{server.url}/v1/score/text", json=body, timeout=300)
            assert response.status_code == 200, response.text
            ppl[name] = [r["ppl"] for r in response.json()["results"]]
        for exact, rounded in zip(ppl["fp32"], ppl["bf16"], strict=True):
            # bf16 moves PPL by up to ~15% on short texts (README, Precision), never more here.
            assert exact != rounded and math.isclose(exact, rounded, rel_tol=0.2)
        # The KL divergence of bf16 against float32 on the same weights measures bf16 damage.
        body = {"models": ["fp32", "bf16"], "texts": texts, "token_level": True}
        compared = httpx.post(f"{server.url}/v1/score/compare", json=body, timeout=300).json()
        assert compared["same_tokenizer"] is True
        for result in compared["results"]:
            assert 0 < result["kl_divergence"] < 0.05
            assert result["top1_agreement"] > 0.8
            assert math.isclose(result["bits_per_byte_ratio"], 1.0, rel_tol=0.1)
        print("bf16 vs float32:", [round(r["kl_divergence"], 5) for r in compared["results"]])
    finally:
        stop_server(server)


def test_a_bad_per_model_option_stops_the_server_at_once(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("lmscore")
    for spec in ("x=default?dtype=float8", "x=default?colour=blue"):
        done = subprocess.run(
            [str(exe), "serve", "--http-port", "0", "--grpc-port", "0", "--model", spec],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "dtype" in done.stderr or "KEY=VALUE" in done.stderr
