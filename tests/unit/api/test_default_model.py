"""A request that names no model, through every door, on a server whose one model is not
called ``default`` (as ``lmscore serve --model smol=...``): it gets that model, as vLLM's
single-model server does; lm-evaluation-harness's remote tokenizer sends no model at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from conftest import serve
from tiny_engines import asgi_client, make_engine

from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.engine import Engine

T = 60.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def smol(tiny_model_dir: Path) -> AsyncIterator[Engine]:
    engine = make_engine(tiny_model_dir, names=("smol",))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def smol_client(smol: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(smol) as http:
        yield http


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/score/text", {"texts": ["hello there"]}),
        ("/v1/score/chat", {"conversations": [[{"role": "assistant", "content": "hi"}]]}),
        ("/v1/score/continuations", {"context": "hello", "continuations": [" there"]}),
        ("/v1/completions", {"prompt": "hello there", "echo": True, "max_tokens": 0}),
    ],
)
async def test_scoring_without_a_model_uses_the_only_one(
    smol_client: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    response = await smol_client.post(path, json=body, timeout=T)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "smol"
    named = await smol_client.post(path, json=body | {"model": "smol"}, timeout=T)
    assert named.json() | {"id": None, "created": None} == response.json() | {
        "id": None,
        "created": None,
    }


@pytest.mark.asyncio(loop_scope="session")
async def test_tokenizer_endpoints_without_a_model(smol_client: httpx.AsyncClient) -> None:
    tokens = (await smol_client.post("/tokenize", json={"prompt": "hello there"})).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    text = await smol_client.post("/detokenize", json={"tokens": tokens["tokens"]})
    assert text.json()["prompt"] == "hello there"
    info = await smol_client.get("/tokenizer_info")
    assert info.status_code == 200 and info.json()["model"] == "smol"


@pytest.mark.asyncio(loop_scope="session")
async def test_grpc_without_a_model(smol: Engine) -> None:
    async with serve(smol) as served:
        response = await served.stub.ScoreText(pb.ScoreTextRequest(texts=["hello"]), timeout=T)
    assert response.model == "smol"


@pytest.mark.asyncio(loop_scope="session")
async def test_several_models_and_no_default_need_a_name(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir, names=("a", "b"))
    try:
        async with asgi_client(engine) as http:
            unnamed = await http.post("/v1/score/text", json={"texts": ["hi"]}, timeout=T)
            named = await http.post("/v1/score/text", json={"texts": ["hi"], "model": "b"})
    finally:
        await engine.close()
    assert unnamed.status_code == 422
    assert unnamed.json()["error"]["param"] == "model"
    assert named.status_code == 200 and named.json()["model"] == "b"
