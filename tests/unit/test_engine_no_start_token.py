"""A model whose tokenizer has neither a BOS nor an EOS token: what needs a start token
(``prepend_bos``, an empty continuation context, comparing with another tokenizer's model)
is refused with a 422 naming the field, never a 500, and the rest is served as usual."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import pytest_asyncio
from tiny_engines import asgi_client, make_engine

from service.backends import dynamic_batcher
from service.backends.base import bos_or_eos
from service.backends.hf import HFBackend

ASYNC = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def no_start_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, its tokenizer stripped of its BOS and EOS tokens."""
    target = tmp_path_factory.mktemp("nostart") / "m"
    shutil.copytree(tiny_model_dir, target)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = target / name
        if path.exists():
            config = json.loads(path.read_text())
            for key in ("bos_token", "eos_token"):
                config.pop(key, None)
            path.write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def other_tokenizer_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with one more token in its tokenizer: another tokenizer."""
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("other") / "m"
    shutil.copytree(tiny_model_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.add_tokens(["<extra>"])
    tokenizer.save_pretrained(target)
    return target


@pytest_asyncio.fixture(loop_scope="session")
async def http(no_start_dir: Path, other_tokenizer_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = make_engine(no_start_dir, names=("default", "twin"))
    backend = HFBackend(other_tokenizer_dir, dtype="float32", device="cpu")
    engine.registry.add("other", "sha256:other", dynamic_batcher(backend, "other", engine.settings))
    assert engine.registry.get("default").backend.bos_id() is None
    async with asgi_client(engine) as client:
        yield client
    await engine.close()


def refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and error["param"] == param
    assert "neither a BOS nor an EOS" in error["message"]


def test_bos_or_eos() -> None:
    assert bos_or_eos(SimpleNamespace(bos_token_id=3, eos_token_id=5)) == 3
    assert bos_or_eos(SimpleNamespace(bos_token_id=None, eos_token_id=5)) == 5
    assert bos_or_eos(SimpleNamespace(bos_token_id=0, eos_token_id=5)) == 0
    assert bos_or_eos(SimpleNamespace(bos_token_id=None, eos_token_id=None)) is None


@ASYNC
async def test_prepend_bos_is_refused_and_plain_scoring_served(http: httpx.AsyncClient) -> None:
    body = {"texts": ["hello world", "a"]}
    refused(await http.post("/v1/score/text", json={**body, "prepend_bos": True}), "prepend_bos")
    plain = await http.post("/v1/score/text", json=body)
    assert plain.status_code == 200, plain.text
    assert [r["num_scored_tokens"] for r in plain.json()["results"]] == [1, 0]


@ASYNC
async def test_an_empty_context_is_refused_a_real_one_served(http: httpx.AsyncClient) -> None:
    continuations = {"continuations": [" world", " there"]}
    empty = await http.post("/v1/score/continuations", json={"context": "", **continuations})
    refused(empty, "context")
    served = await http.post("/v1/score/continuations", json={"context": "hello", **continuations})
    assert served.status_code == 200, served.text


@ASYNC
async def test_comparing_with_another_tokenizer_is_refused(http: httpx.AsyncClient) -> None:
    body = {"texts": ["hello world"], "models": ["default", "other"]}
    refused(await http.post("/v1/score/compare", json=body), "models")
    same = await http.post("/v1/score/compare", json={**body, "models": ["default", "twin"]})
    assert same.status_code == 200, same.text
