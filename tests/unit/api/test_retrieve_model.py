"""GET /v1/models/{id}: OpenAI's retrieve (``client.models.retrieve``), the same card the
listing holds, a 404 ``not_found`` naming ``model`` for an unknown id, and ids that hold a
slash (``org/name``, as vLLM serves hub ids)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from tiny_engines import asgi_client, make_engine

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAMES = ("default", "org/tiny-llama")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def two_names(tiny_model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = make_engine(tiny_model_dir, names=NAMES)
    async with asgi_client(engine) as http:
        yield http
    await engine.close()


@pytest.mark.parametrize("name", NAMES)
async def test_a_served_model_is_its_listed_card(two_names: httpx.AsyncClient, name: str) -> None:
    listing = (await two_names.get("/v1/models")).json()["data"]
    response = await two_names.get(f"/v1/models/{name}")
    assert response.status_code == 200, response.text
    card = response.json()
    assert card == next(c for c in listing if c["id"] == name)
    assert card["object"] == "model" and card["owned_by"] == "lmscore"


async def test_an_unknown_model_is_a_404(two_names: httpx.AsyncClient) -> None:
    response = await two_names.get("/v1/models/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found" and error["param"] == "model"
    assert "org/tiny-llama" in error["message"]  # says what is served
