"""A forward pass that raises fails only the requests in its batch, as a 500 of the
contract's shape; requests in other batches, before and after, are answered normally."""

from __future__ import annotations

import asyncio
import dataclasses
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

    def forward(items: list[Any], lane: int | None = None) -> Any:
        if any(item.input_ids == poison_ids for item in items):
            raise RuntimeError("the device fell over")
        return real_forward(items, lane)

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


def _with_last_logprob(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    text: str | None,
    value: float,
    model_name: str,
    *,
    next_token: bool = False,
) -> None:
    """The backend's scores for ``text`` (every window's when None) get ``value`` as the
    last token's logprob and the last alternative's (the rest as the model gave them);
    with ``next_token``, as the best next token's logprob instead."""
    model = engine.registry.get(model_name)
    ids = (
        None
        if text is None
        else tuple(model.backend.tokenizer(text, add_special_tokens=False)["input_ids"])
    )
    real_forward = model.backend.forward

    def forward(items: list[Any], lane: int | None = None) -> Any:
        results = real_forward(items, lane)
        for i, item in enumerate(items):
            if ids is not None and item.input_ids != ids:
                continue
            result = results[i]
            if next_token and result.next_top_logprobs is not None:
                following = result.next_top_logprobs.copy()
                following[0] = value
                results[i] = dataclasses.replace(result, next_top_logprobs=following)
                continue
            logprobs, top = result.logprobs.copy(), result.top_logprobs.copy()
            logprobs[-1] = value
            if top.size:
                top[-1, -1] = value
            results[i] = dataclasses.replace(result, logprobs=logprobs, top_logprobs=top)
        return results

    monkeypatch.setattr(model.backend, "forward", forward)


async def test_a_ruled_out_token_is_reported_at_the_lowest_logprob(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """log p = -inf (a logit of -inf) is a score, not a fault: every door reports it as
    -9999, as OpenAI and vLLM do (JSON has no infinity), and the sums stay finite."""
    # A model of its own: its saturated PPL (e^709) must not land in the drift histogram
    # series that other tests read.
    engine = engine_factory(names=("ruled-out",))
    body = {"model": "ruled-out", "texts": ["a lazy dog"], "return_tokens": True, "top_k": 3}
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = (await client.post("/v1/score/text", json=body)).json()["results"][0]
        _with_last_logprob(engine, monkeypatch, "a lazy dog", float("-inf"), "ruled-out")
        answer = await client.post("/v1/score/text", json=body)
        completion = await client.post(
            "/v1/completions",
            json={
                "model": "ruled-out",
                "prompt": "a lazy dog",
                "echo": True,
                "max_tokens": 0,
                "logprobs": 3,
            },
        )
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    last = result["tokens"][-1]
    assert last["logprob"] == -9999.0
    assert min(t["logprob"] for t in last["top"]) == -9999.0
    dropped = before["sum_logprob"] - before["tokens"][-1]["logprob"]
    assert result["sum_logprob"] == pytest.approx(dropped - 9999.0, rel=1e-6)
    assert result["mean_nll"] == pytest.approx(-result["sum_logprob"] / result["num_scored_tokens"])
    assert answer.json()["aggregate"]["sum_logprob"] == result["sum_logprob"]
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["logprobs"]["token_logprobs"][-1] == -9999.0


async def test_nan_scores_fail_their_request_naming_the_text(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN (a numerical overflow in the model) is not passed off as a score: the request
    holding that text gets a 500 naming it; a request batched with it is answered."""
    engine = engine_factory()
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        alone = await client.post("/v1/score/text", json={"texts": ["the quick brown fox"]})
        _with_last_logprob(engine, monkeypatch, POISON, float("nan"), "default")
        failed, neighbour = await asyncio.gather(
            client.post("/v1/score/text", json={"texts": ["hello world", POISON]}),
            client.post("/v1/score/text", json={"texts": ["the quick brown fox"]}),
        )
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    assert error["type"] == "internal" and error["param"] == "texts[1]"
    assert "NaN" in error["message"] and "float32" in error["message"]
    assert neighbour.status_code == 200
    got, want = neighbour.json()["results"][0], alone.json()["results"][0]
    # Batched with others, float32 sums may round differently: the contract's tolerance.
    assert got["sum_logprob"] == pytest.approx(want["sum_logprob"], rel=1e-4)


async def test_a_ruled_out_token_in_continuations_and_compare(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_factory(names=("ruled-out", "other"))
    body = {"models": ["ruled-out", "other"], "texts": ["a lazy dog"], "token_level": True}
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        _with_last_logprob(engine, monkeypatch, None, float("-inf"), "other")
        answer = await client.post("/v1/score/compare", json=body)
        continuation = await client.post(
            "/v1/score/continuations",
            json={"model": "other", "context": "a lazy", "continuations": [" dog", " cat"]},
        )
    assert continuation.status_code == 200, continuation.text
    # One window holds both continuations (a token tree): its last token, the last of
    # " cat", is the one ruled out.
    dog, cat = (r["sum_logprob"] for r in continuation.json()["results"])
    assert -100 < dog < 0 and -9999.0 - 100 < cat <= -9999.0
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    assert result["scores"][1]["sum_logprob"] <= -9999.0
    assert result["binoculars"] is not None and result["kl_divergence"] is not None


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/score/continuations",
            {"context": "a lazy", "continuations": [" dog"]},
            "continuations[0]",
        ),
        ("/v1/score/compare", {"models": ["default", "twin"], "texts": ["a lazy dog"]}, "texts[0]"),
    ],
)
async def test_nan_scores_fail_every_endpoint_naming_the_input(
    engine_factory: Callable[..., Engine],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    engine = engine_factory(names=("default", "twin"))
    _with_last_logprob(engine, monkeypatch, None, float("nan"), "default")
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post(path, json=body)
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["param"] == param
    assert "NaN" in answer.json()["error"]["message"]


async def test_a_nan_next_token_fails_its_completion_naming_the_prompt(
    engine_factory: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_factory()
    _with_last_logprob(engine, monkeypatch, None, float("nan"), "default", next_token=True)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post(
            "/v1/completions", json={"prompt": ["hello", "a lazy dog"], "max_tokens": 1}
        )
    assert answer.status_code == 500, answer.text
    assert "NaN" in answer.json()["error"]["message"]
    assert answer.json()["error"]["param"] is not None
