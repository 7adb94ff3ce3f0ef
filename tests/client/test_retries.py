"""Retries of the REST clients on 429/503/connection errors (httpx MockTransport), with
the waits recorded instead of slept."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from lmscore_client import (
    AsyncClient,
    Client,
    ConnectionFailedError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RequestTimeoutError,
    RetryPolicy,
    UnavailableError,
)
from lmscore_client.retry import parse_retry_after

OK = {
    "model": "default",
    "model_revision": "sha256:abc",
    "results": [
        {"num_tokens": 3, "num_scored_tokens": 2, "sum_logprob": -2.0, "mean_nll": 1.0,
         "ppl": 2.718, "bits_per_byte": 0.5, "bits_per_char": 0.5, "truncated": False,
         "some_new_field": [1, 2]}
    ],
    "aggregate": {"num_scored_tokens": 2, "sum_logprob": -2.0, "mean_nll": 1.0, "ppl": 2.718},
    "usage": {"prompt_tokens": 3},
    "another_new_field": True,
}  # fmt: skip


def _error(status: int, type_: str, param: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"type": type_, "message": f"{type_} happened", "param": param}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers requests from a list, then 200 OK; remembers what it saw."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=OK)


def _client(script: Script, **kwargs: object) -> tuple[Client, list[float]]:
    client = Client("http://lmscore.test", transport=httpx.MockTransport(script), **kwargs)  # type: ignore[arg-type]
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # a fake clock that the waits advance
        waits.append(seconds)

    client._sleep = sleep
    client._clock = lambda: sum(waits)
    return client, waits


def test_429_with_retry_after_is_retried_after_that_wait() -> None:
    script = Script(_error(429, "overloaded", **{"Retry-After": "1"}))
    client, waits = _client(script, api_key="k1")
    response = client.score_text(["hello world"])
    assert response.results[0].ppl == 2.718
    assert waits == [1.0]
    assert len(script.requests) == 2
    assert script.requests[0].headers["authorization"] == "Bearer k1"


def test_503_then_200_backs_off() -> None:
    script = Script(_error(503, "unavailable"), _error(503, "unavailable"))
    client, waits = _client(script, retry=RetryPolicy(backoff_s=0.5, jitter=0.0))
    assert client.score_text("a b").model_revision == "sha256:abc"
    assert waits == [0.5, 1.0]  # exponential without Retry-After


def test_persistent_503_gives_up_after_max_attempts() -> None:
    script = Script(*[_error(503, "unavailable", **{"Retry-After": "2"})] * 10)
    client, waits = _client(script, retry=RetryPolicy(max_attempts=4))
    with pytest.raises(UnavailableError) as info:
        client.score_text("a b")
    assert info.value.status == 503
    assert info.value.retry_after_s == 2.0
    assert len(script.requests) == 4
    assert waits == [2.0, 2.0, 2.0]


def test_total_time_budget_stops_retries() -> None:
    script = Script(*[_error(429, "overloaded", **{"Retry-After": "30"})] * 10)
    client, waits = _client(script, retry=RetryPolicy(max_attempts=10, max_total_s=70))
    with pytest.raises(OverloadedError):
        client.score_text("a b")
    assert waits == [30.0, 30.0]  # a third wait would end past 70 s


def test_422_is_not_retried_and_carries_param() -> None:
    script = Script(_error(422, "invalid_request", "texts[1]"))
    client, waits = _client(script)
    with pytest.raises(InvalidRequestError) as info:
        client.score_text(["fine", ""])
    error = info.value
    assert (error.status, error.type, error.param) == (422, "invalid_request", "texts[1]")
    assert error.message == "invalid_request happened"
    assert waits == [] and len(script.requests) == 1


def test_404_unknown_model() -> None:
    client, _ = _client(Script(_error(404, "not_found", "model")))
    with pytest.raises(NotFoundError) as info:
        client.score_text("a b", model="nope")
    assert info.value.status == 404 and info.value.param == "model"


def test_connection_errors_are_retried_then_raised() -> None:
    refused = httpx.ConnectError("connection refused")
    script = Script(refused, refused)
    client, waits = _client(script, retry=RetryPolicy(jitter=0.0))
    assert client.score_text("a b").results[0].num_scored_tokens == 2
    assert waits == [0.5, 1.0]
    script = Script(*[refused] * 5)
    client, waits = _client(script, retry=RetryPolicy(max_attempts=3, jitter=0.0))
    with pytest.raises(ConnectionFailedError) as info:
        client.score_text("a b")
    assert info.value.status == 0 and "lmscore.test" in str(info.value)


def test_no_answer_within_the_client_timeout_is_a_timeout_not_retried() -> None:
    # The request reached the server, which may still be working on it: another attempt
    # would only add load, and "cannot reach" would send the user to check the network.
    script = Script(*[httpx.ReadTimeout("timed out")] * 5)
    client, waits = _client(script, timeout=2.5)
    with pytest.raises(RequestTimeoutError) as info:
        client.score_text("a b")
    assert info.value.status == 0 and "timeout of 2.5 s" in str(info.value)
    assert waits == [] and len(script.requests) == 1


def test_a_server_url_without_a_scheme_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Client("127.0.0.1:8000")


def test_a_text_with_a_lone_surrogate_goes_to_the_server_to_judge() -> None:
    script = Script(_error(422, "invalid_request", "texts[1]"))
    client, _ = _client(script)
    with pytest.raises(InvalidRequestError) as info:
        client.score_text(["fine", "bad \udc80 text", "fine too"])
    assert info.value.param == "texts[1]"
    sent = script.requests[0]
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content)["texts"][1] == "bad \udc80 text"  # escaped, as sent
    client.score_text(["naïve 😀"])
    assert "naïve 😀".encode() in script.requests[1].content  # UTF-8 otherwise


def test_nan_cannot_be_sent() -> None:
    script = Script()
    client, _ = _client(script)
    with pytest.raises(InvalidRequestError, match="JSON"):
        client.score_text("a b", stride=float("nan"))  # type: ignore[arg-type]
    assert script.requests == []


def test_request_body_and_unknown_fields() -> None:
    script = Script()
    client, _ = _client(script)
    response = client.score_text("only one", top_k=2, return_tokens=True)
    sent = json.loads(script.requests[0].content)
    assert sent["texts"] == ["only one"] and sent["top_k"] == 2 and sent["return_tokens"]
    assert "stride" not in sent and "reference" not in sent  # optional fields left out
    result = response.results[0]
    assert result.percentile is None and result.is_outlier is None and result.tokens is None


async def test_async_client_retries_429_then_succeeds() -> None:
    script = Script(_error(429, "overloaded", **{"Retry-After": "1"}), _error(503, "unavailable"))
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    async with AsyncClient(
        "http://lmscore.test",
        transport=httpx.MockTransport(script),
        retry=RetryPolicy(backoff_s=0.25, jitter=0.0),
    ) as client:
        client._sleep = record
        response = await client.score_text("a b")
        assert response.results[0].ppl == 2.718
        assert waits == [1.0, 0.5]  # Retry-After, then the second backoff step
        # concurrent calls share the pooled connection
        responses = await asyncio.gather(*(client.score_text(f"t {i}") for i in range(8)))
    assert len(responses) == 8 and len(script.requests) == 11


async def test_async_client_422_not_retried() -> None:
    script = Script(_error(422, "invalid_request", "conversations[0]"))
    async with AsyncClient("http://lmscore.test", transport=httpx.MockTransport(script)) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.score_chat([{"role": "user", "content": ""}])
    assert info.value.param == "conversations[0]"
    assert len(script.requests) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
