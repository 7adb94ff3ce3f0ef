"""GET /metrics over ASGI: the contract's metrics, their labels, and what moves them."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT_URL = "/v1/score/text"
ClientFactory = Callable[..., httpx.AsyncClient]
CONTRACT_METRICS = (
    "lmscore_requests_total",
    "lmscore_request_duration_seconds",
    "lmscore_queue_duration_seconds",
    "lmscore_inference_duration_seconds",
    "lmscore_batch_size",
    "lmscore_batch_tokens",
    "lmscore_padding_ratio",
    "lmscore_tokens_scored_total",
    "lmscore_queue_depth",
    "lmscore_inflight_requests",
    "lmscore_requests_rejected_total",
    "lmscore_text_ppl",
    "lmscore_model_info",
)
SCORE_TEXT = {"endpoint": "score_text", "protocol": "http"}
MODEL_LABELS = {
    "model": "default",
    "backend": "transformers",
    "dtype": "float32",
    "device": "cpu",
    "revision": "sha256:test",
}


class Scrape:
    """One parsed /metrics exposition."""

    def __init__(self, text: str) -> None:
        families = list(text_string_to_metric_families(text))
        self.names = {f.name for f in families} | {s.name for f in families for s in f.samples}
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def score(client: httpx.AsyncClient, texts: list[str], **headers: str) -> httpx.Response:
    response = await client.post(TEXT_URL, json={"texts": texts}, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_every_contract_metric_is_exposed(client: httpx.AsyncClient) -> None:
    await score(client, ["hello world", "the quick brown fox"])
    names = (await scrape(client)).names
    missing = [name for name in CONTRACT_METRICS if name not in names]
    assert not missing


async def test_requests_total_and_duration(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await score(client, ["hello world"])
    await score(client, ["a lazy dog"])
    after = await scrape(client)
    total = "lmscore_requests_total"
    assert (
        after.value(total, code="200", **SCORE_TEXT)
        == before.value(total, code="200", **SCORE_TEXT) + 2
    )
    duration = "lmscore_request_duration_seconds_count"
    assert after.value(duration, **SCORE_TEXT) == before.value(duration, **SCORE_TEXT) + 2
    assert after.value("lmscore_inflight_requests") == 0
    assert after.value("lmscore_queue_depth", model="default") == 0


async def test_probes_and_scrapes_are_not_requests(client: httpx.AsyncClient) -> None:
    """Scrapes, health and readiness probes would dilute request totals and latency."""
    before = await scrape(client)
    for path in ("/metrics", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200
    after = await scrape(client)
    counted = [
        key
        for key, value in after.samples.items()
        if key[0].startswith("lmscore_request") and value != before.samples.get(key, 0.0)
    ]
    assert counted == []


async def test_invalid_request_is_counted(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    response = await client.post(TEXT_URL, json={"texts": ["hello"], "top_k": 10_000})
    assert response.status_code == 422, response.text
    after = await scrape(client)
    rejected = "lmscore_requests_rejected_total"
    assert after.value(rejected, reason="invalid") == before.value(rejected, reason="invalid") + 1
    total = "lmscore_requests_total"
    assert (
        after.value(total, code="422", **SCORE_TEXT)
        == before.value(total, code="422", **SCORE_TEXT) + 1
    )


async def test_unauthorized_is_counted(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys=["k"])
    before = await scrape(client)  # /metrics stays open without protect_metrics
    response = await client.post(TEXT_URL, json={"texts": ["hello world"]})
    assert response.status_code == 401, response.text
    after = await scrape(client)
    rejected = "lmscore_requests_rejected_total"
    assert after.value(rejected, reason="unauthorized") == (
        before.value(rejected, reason="unauthorized") + 1
    )
    assert after.value("lmscore_requests_total", code="401", **SCORE_TEXT) == (
        before.value("lmscore_requests_total", code="401", **SCORE_TEXT) + 1
    )
    await score(client, ["hello world"], authorization="Bearer k")


async def test_text_ppl_observed_per_text(client: httpx.AsyncClient) -> None:
    labels = {"model": "default", "endpoint": "score_text"}
    before = await scrape(client)
    response = await score(client, ["hello world", "the quick brown fox", "Grüße aus München"])
    ppls = [r["ppl"] for r in response.json()["results"]]
    after = await scrape(client)
    assert after.value("lmscore_text_ppl_count", **labels) == (
        before.value("lmscore_text_ppl_count", **labels) + 3
    )
    grown = after.value("lmscore_text_ppl_sum", **labels) - before.value(
        "lmscore_text_ppl_sum", **labels
    )
    assert grown == pytest.approx(sum(ppls), rel=1e-6)


async def test_model_info(client: httpx.AsyncClient) -> None:
    assert (await scrape(client)).value("lmscore_model_info", **MODEL_LABELS) == 1.0


async def test_timing_headers(client: httpx.AsyncClient) -> None:
    response = await score(client, ["hello world", "a lazy dog"])
    for header in ("x-queue-time-ms", "x-inference-time-ms"):
        assert float(response.headers[header]) >= 0
    assert float(response.headers["x-inference-time-ms"]) > 0


async def test_protected_metrics(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys=["k"], protect_metrics=True)
    refused = await client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "unauthorized"
    wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = await client.get("/metrics", headers={"authorization": "Bearer k"})
    assert allowed.status_code == 200
    assert "lmscore_requests_total" in Scrape(allowed.text).names
    assert (await client.get("/healthz")).status_code == 200
