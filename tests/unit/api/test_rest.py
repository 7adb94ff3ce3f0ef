"""The REST door over ASGI: probes, model list, and the contract's error JSON."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT_URL = "/v1/score/text"
CHAT_URL = "/v1/score/chat"
LONG_TEXT = " ".join(["the quick brown fox jumps over a lazy dog"] * 20)
CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"}]
ClientFactory = Callable[..., httpx.AsyncClient]


def assert_error(response: httpx.Response, status: int, type_: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param"}
    assert body["error"]["type"] == type_
    assert body["error"]["param"] == param
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def assert_healthy(client: httpx.AsyncClient) -> None:
    response = await client.post(TEXT_URL, json={"texts": ["hello world", "a dog"]})
    assert response.status_code == 200, response.text
    assert [r["num_scored_tokens"] > 0 for r in response.json()["results"]] == [True, True]


async def test_probes_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    openapi = await client.get("/openapi.json")
    assert openapi.status_code == 200
    assert {TEXT_URL, CHAT_URL, "/v1/models"} <= set(openapi.json()["paths"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_readyz_503_while_loading(engine_factory: Callable[..., Any]) -> None:
    from service.api.rest import create_app

    engine = engine_factory()
    engine.registry.ready = False
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert_error(await client.get("/readyz"), 503, "unavailable", None)
        loading = await client.post(TEXT_URL, json={"texts": ["hello"]})
        assert_error(loading, 503, "unavailable", "model")
        engine.registry.ready = True
        assert (await client.get("/readyz")).status_code == 200


async def test_models_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == "default" and card["object"] == "model"
    assert card["backend"] == "transformers"
    assert card["dtype"] == "float32" and card["device"] == "cpu"
    assert card["max_context"] == 64
    assert card["revision"] == "sha256:test"
    assert card["has_chat_template"] is True
    assert card["compiled"] is False  # --compile is off by default
    # OpenAI's model object: when it was loaded (Unix seconds) and who owns it.
    assert isinstance(card["created"], int) and 1.7e9 < card["created"] <= time.time()
    assert card["owned_by"] == "lmscore"


async def test_score_text_response_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(TEXT_URL, json={"texts": ["hello world"]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "model_revision", "results", "aggregate", "usage"}
    (result,) = body["results"]
    assert "tokens" not in result and "messages" not in result
    with_tokens = await client.post(
        TEXT_URL, json={"texts": ["hello world"], "return_tokens": True}
    )
    token = with_tokens.json()["results"][0]["tokens"][1]
    assert set(token) == {"id", "text", "start", "end", "logprob", "rank"}
    chat = await client.post(CHAT_URL, json={"conversations": [CHAT], "return_tokens": True})
    assert chat.status_code == 200
    chat_token = chat.json()["results"][0]["tokens"][0]
    assert {"message_index", "scored"} <= set(chat_token)
    with_top = await client.post(
        TEXT_URL, json={"texts": ["hello world"], "return_tokens": True, "top_k": 2}
    )
    first, second = with_top.json()["results"][0]["tokens"][:2]
    assert first["top"] is None and first["logprob"] is None
    assert [set(alt) for alt in second["top"]] == [{"id", "text", "logprob"}] * 2


BAD_TEXT_REQUESTS = [
    ({}, "texts"),
    ({"texts": []}, "texts"),
    ({"texts": ["fine", ""]}, "texts[1]"),
    ({"texts": [5]}, "texts[0]"),
    ({"texts": "not a list"}, "texts"),
    ({"texts": ["x"], "top_k": 21}, "top_k"),
    ({"texts": ["x"], "top_k": -1}, "top_k"),
    ({"texts": ["x"], "overflow": "wrap"}, "overflow"),
    ({"texts": ["x"], "stride": 0}, "stride"),
    ({"texts": ["x"], "temperature": 1.0}, "temperature"),
    ({"texts": ["x"], "return_tokens": "maybe"}, "return_tokens"),
    ({"texts": [LONG_TEXT]}, "texts[0]"),
    ({"texts": ["ok", LONG_TEXT], "overflow": "error"}, "texts[1]"),
    ({"texts": [LONG_TEXT], "overflow": "sliding_window", "stride": 64}, "stride"),
]
BAD_CHAT_REQUESTS = [
    ({"conversations": []}, "conversations"),
    ({"conversations": [[]]}, "conversations[0]"),
    ({"conversations": [[{"role": "user"}]]}, "conversations[0][0].content"),
    (
        {"conversations": [[CHAT[0], {"role": "wizard", "content": "hi"}]]},
        "conversations[0][1].role",
    ),
    ({"conversations": [CHAT], "score_roles": ["wizard"]}, "score_roles[0]"),
    ({"conversations": [CHAT], "score_roles": []}, "score_roles"),
    ({"conversations": [[{"role": "user", "content": LONG_TEXT}, CHAT[1]]]}, "conversations[0]"),
]


@pytest.mark.parametrize(("body", "param"), BAD_TEXT_REQUESTS)
async def test_bad_text_requests(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    assert_error(await client.post(TEXT_URL, json=body), 422, "invalid_request", param)


@pytest.mark.parametrize(("body", "param"), BAD_CHAT_REQUESTS)
async def test_bad_chat_requests(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    assert_error(await client.post(CHAT_URL, json=body), 422, "invalid_request", param)


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    for url, body in ((TEXT_URL, {"texts": ["x"]}), (CHAT_URL, {"conversations": [CHAT]})):
        response = await client.post(url, json={**body, "model": "nope"})
        assert_error(response, 404, "not_found", "model")
        assert "default" in response.json()["error"]["message"]


@pytest.mark.parametrize("raw", [b"{not json", b'{"texts": ["a"]', b"\xff\xfe", b"{'texts': []}"])
async def test_unparseable_json(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        TEXT_URL, content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request", None)


@pytest.mark.parametrize("url", [TEXT_URL, CHAT_URL, "/v1/completions", "/tokenize"])
async def test_empty_body(client: httpx.AsyncClient, url: str) -> None:
    # Not JSON at all, so a 400 (it was a 422 "Field required" naming no field).
    for headers in ({"content-type": "application/json"}, {}):
        response = await client.post(url, content=b"", headers=headers)
        assert_error(response, 400, "invalid_request", None)
        assert "empty" in response.json()["error"]["message"]


@pytest.mark.parametrize("raw", [b"null", b"[]", b'"texts"', b"3"])
async def test_a_body_that_is_not_an_object(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        TEXT_URL, content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request", "body")
    assert "JSON object" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("url", "raw", "param"),
    [
        (TEXT_URL, b'{"texts": ["ok", "a\\ud800b"]}', "texts[1]"),
        (
            CHAT_URL,
            b'{"conversations": [[{"role": "user", "content": "hi"}, '
            b'{"role": "assistant", "content": "\\udc00"}]]}',
            "conversations[0][1].content",
        ),
        # A context is not checked for length, so nothing rejected its surrogate: it
        # reached the tokenizer and was a 500 (found by test_openapi_fuzz).
        ("/v1/score/continuations", b'{"context": "a\\ud800", "continuations": ["b"]}', "context"),
    ],
)
async def test_lone_surrogates_are_invalid(
    client: httpx.AsyncClient, url: str, raw: bytes, param: str
) -> None:
    response = await client.post(url, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request", param)


@pytest.mark.parametrize(
    ("url", "change", "param"),
    [
        (TEXT_URL, {"top_k": "3", "return_tokens": True}, "top_k"),
        (TEXT_URL, {"return_tokens": "yes"}, "return_tokens"),
        (TEXT_URL, {"prepend_bos": 1}, "prepend_bos"),
        (TEXT_URL, {"top_k": True, "return_tokens": True}, "top_k"),
        (TEXT_URL, {"overflow": "sliding_window", "stride": "64"}, "stride"),
        (CHAT_URL, {"include_end_of_turn": "true"}, "include_end_of_turn"),
        ("/v1/score/continuations", {"return_tokens": "no"}, "return_tokens"),
    ],
)
async def test_a_value_of_the_wrong_json_type_is_refused_not_coerced(
    client: httpx.AsyncClient, url: str, change: dict[str, Any], param: str
) -> None:
    """ "3" is not a top_k and "yes" not a boolean: a 422 naming the field, never a guess."""
    bodies = {
        TEXT_URL: {"texts": ["a b"]},
        CHAT_URL: {"conversations": [CHAT]},
        "/v1/score/continuations": {"context": "a", "continuations": ["b"]},
    }
    response = await client.post(url, json={**bodies[url], **change})
    assert_error(response, 422, "invalid_request", param)


async def test_openapi_declares_the_error_body(client: httpx.AsyncClient) -> None:
    """Every error status an operation declares has the contract's body (not FastAPI's
    {"detail": [...]}), and every scoring route declares all the errors it can answer."""
    document = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == error_ref, (
                        method,
                        path,
                        status,
                    )
    for path in (TEXT_URL, CHAT_URL, "/v1/score/continuations", "/v1/completions"):
        declared = set(document["paths"][path]["post"]["responses"])
        assert declared == {"200", "400", "401", "404", "413", "422", "429", "500", "503", "504"}
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}


async def test_json_of_the_wrong_shape(client: httpx.AsyncClient) -> None:
    for payload in ([1, 2], "texts", None):
        response = await client.post(TEXT_URL, content=json.dumps(payload))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_request"


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404, "not_found", None)
    for method in ("GET", "PUT", "DELETE", "HEAD"):
        wrong_method = await client.request(method, TEXT_URL)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"  # RFC 9110: a 405 names the methods
        if method != "HEAD":
            assert wrong_method.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models", "/metrics"])
async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    """Load balancers and health checks probe with HEAD."""
    get, head = await client.get(path), await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_too_many_texts(client_factory: ClientFactory) -> None:
    client = client_factory(max_texts_per_request=2)
    assert_error(
        await client.post(TEXT_URL, json={"texts": ["a", "b", "c"]}), 413, "too_large", "texts"
    )
    response = await client.post(CHAT_URL, json={"conversations": [CHAT] * 3})
    assert_error(response, 413, "too_large", "conversations")
    assert (await client.post(TEXT_URL, json={"texts": ["a b", "c d"]})).status_code == 200


async def test_body_too_large(client_factory: ClientFactory) -> None:
    client = client_factory(max_body_bytes=2048)
    big = {"texts": ["word " * 500]}
    assert_error(await client.post(TEXT_URL, json=big), 413, "too_large", "body")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"word " * 100
        yield b'"]}'

    streamed = await client.post(
        TEXT_URL, content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "too_large", "body")
    await assert_healthy(client)


async def test_api_keys(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys=["secret-1", "secret-2"])
    body = {"texts": ["hello world"]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "secret-1"},
        {"Authorization": "Basic secret-1"},
    ):
        assert_error(
            await client.post(TEXT_URL, json=body, headers=headers), 401, "unauthorized", None
        )
    assert_error(await client.get("/v1/models"), 401, "unauthorized", None)
    for key in ("secret-1", "secret-2"):
        ok = await client.post(TEXT_URL, json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_request_timeout(client_factory: ClientFactory) -> None:
    client = client_factory(request_timeout_s=1e-6)
    response = await client.post(TEXT_URL, json={"texts": ["hello world"] * 4})
    assert_error(response, 504, "timeout", None)
    chat = await client.post(CHAT_URL, json={"conversations": [CHAT]})
    assert_error(chat, 504, "timeout", None)


async def test_still_healthy_after_bad_requests(client: httpx.AsyncClient) -> None:
    for body, _ in BAD_TEXT_REQUESTS:
        assert (await client.post(TEXT_URL, json=body)).status_code < 500
    for body, _ in BAD_CHAT_REQUESTS:
        assert (await client.post(CHAT_URL, json=body)).status_code < 500
    await assert_healthy(client)
    chat = await client.post(CHAT_URL, json={"conversations": [CHAT]})
    assert chat.status_code == 200 and chat.json()["results"][0]["num_scored_tokens"] > 0


async def test_asked_for_fields_are_null_not_absent_when_nothing_is_scored(
    client: httpx.AsyncClient,
) -> None:
    """A one-token text scores nothing: what the request asked for is there, null, as its
    mean_nll is; what it did not ask for stays out."""
    asked = {"texts": ["a", "hello world"], "return_entropy": True, "min_k": True}
    lone, scored = (await client.post(TEXT_URL, json=asked)).json()["results"]
    fields = ("mean_entropy", "entropy_bits_per_char", "min_k_logprob", "min_k_plus_plus")
    assert lone["num_scored_tokens"] == 0 and lone["mean_nll"] is None
    assert all(lone[field] is None for field in fields)
    assert all(isinstance(scored[field], float) for field in fields)
    plain = (await client.post(TEXT_URL, json={"texts": ["a"]})).json()["results"][0]
    assert not set(fields) & set(plain) and "percentile" not in plain


async def test_openapi_describes_results_and_tokens(client: httpx.AsyncClient) -> None:
    """The response schemas list their fields: results and tokens drop what was not asked
    for when serialised, which once left their schemas empty."""
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    results = {name: schema for name, schema in schemas.items() if name.startswith("TextResult")}
    tokens = {name: schema for name, schema in schemas.items() if name.startswith("TokenScore")}
    assert results and tokens
    for schema in results.values():
        assert {"mean_nll", "bits_per_char", "tokens", "percentile"} <= set(schema["properties"])
    for schema in tokens.values():
        assert {"id", "logprob", "rank", "top"} <= set(schema["properties"])
        assert "with_top" not in schema["properties"]
