"""A forward pass that raises fails only the requests in its batch, as a 500 of the
contract's shape; requests in other batches, before and after, are answered normally."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.api.rest import create_app
from service.engine import Engine
from service.metrics import REGISTRY

pytestmark = pytest.mark.asyncio(loop_scope="session")
POISON = "poison pill text"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_failing_forward_fails_only_its_batch(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_factory(max_batch_size=1)  # one request per forward: one batch each
    model = engine.registry.get("default")
    poison_ids = tuple(model.backend.tokenizer(POISON, add_special_tokens=False)["input_ids"])
    real_forward = model.backend.forward

    def forward(items: list[Any]) -> Any:
        if any(item.input_ids == poison_ids for item in items):
            raise RuntimeError("the device fell over")
        return real_forward(items)

    monkeypatch.setattr(model.backend, "forward", forward)
    labels = {"endpoint": "score_text", "protocol": "http", "code": "500"}
    errors = sample("lmscore_requests_total", **labels)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        texts = ["hello world", POISON, "a lazy dog", "the quick brown fox"]
        alone = {t: (await client.post("/v1/score/text", json={"texts": [t]})) for t in texts}
        together = await asyncio.gather(
            *(client.post("/v1/score/text", json={"texts": [t]}) for t in texts)
        )
        after = await client.post("/v1/score/text", json={"texts": ["still here"]})
    for text, answer in zip(texts, together, strict=True):
        if text == POISON:
            assert answer.status_code == 500
            assert answer.json()["error"]["type"] == "internal"
            assert "RuntimeError" in answer.json()["error"]["message"]
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"] == alone[text].json()["results"]
    assert alone[POISON].status_code == 500
    assert after.status_code == 200
    assert sample("lmscore_requests_total", **labels) == errors + 2
