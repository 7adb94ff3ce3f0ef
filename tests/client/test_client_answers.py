"""What the REST clients send besides the body (headers), and how they take an answer that
is not lmscore's: a success whose body is not JSON, or not the route's shape, is an
``LMScoreError`` like every other failure, never a bare JSON or key error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from test_retries import OK, Script

from lmscore_client import AsyncClient, Client, LMScoreError, UnexpectedResponseError


def _sent_headers(monkeypatch: pytest.MonkeyPatch, **headers: str) -> list[list[str]]:
    monkeypatch.setenv("LMSCORE_API_KEY", "from-env")
    script = Script()
    with Client(
        "http://lmscore.test", transport=httpx.MockTransport(script), headers=headers
    ) as client:
        client.score_text("a b")
    (request,) = script.requests
    return [request.headers.get_list(name) for name in ("authorization", "user-agent")]


def test_a_callers_headers_replace_the_defaults_whatever_their_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sent twice before: ["Bearer mine", "Bearer from-env"] and both user agents.
    mine = _sent_headers(monkeypatch, Authorization="Bearer mine", **{"User-Agent": "me"})
    assert mine == [["Bearer mine"], ["me"]]
    assert _sent_headers(monkeypatch) == [["Bearer from-env"], ["lmscore-client"]]


ANSWERS: dict[str, Callable[[], httpx.Response]] = {
    "not json": lambda: httpx.Response(
        200, text="<html>proxy login</html>", headers={"content-type": "text/html"}
    ),
    "not the shape": lambda: httpx.Response(200, json={"foo": 1}),
    "a list": lambda: httpx.Response(200, json=[OK]),
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_success_that_is_not_lmscores_answer_is_an_lmscore_error(
    answer: Callable[[], httpx.Response],
) -> None:
    blocking = Client("http://lmscore.test", transport=httpx.MockTransport(Script(answer())))
    with blocking, pytest.raises(UnexpectedResponseError) as from_blocking:
        blocking.score_text("a b")

    async def send() -> None:
        transport = httpx.MockTransport(Script(answer()))
        async with AsyncClient("http://lmscore.test", transport=transport) as client:
            await client.score_text("a b")

    with pytest.raises(UnexpectedResponseError) as from_async:
        asyncio.run(send())
    for caught in (from_blocking.value, from_async.value):
        assert isinstance(caught, LMScoreError)
        assert caught.status == 200 and "/v1/score/text" in caught.message


@pytest.mark.parametrize(
    "unreadable",
    [httpx.DecodingError("bad gzip stream"), httpx.TooManyRedirects("redirect loop")],
    ids=["decoding", "redirects"],
)
def test_an_answer_that_cannot_be_read_is_an_lmscore_error_not_retried(
    unreadable: httpx.RequestError,
) -> None:
    # These httpx errors are not transport errors, and escaped the clients unwrapped.
    script = Script(unreadable)
    client = Client("http://lmscore.test", transport=httpx.MockTransport(script))
    with client, pytest.raises(UnexpectedResponseError) as caught:
        client.score_text("a b")
    assert type(unreadable).__name__ in caught.value.message
    assert len(script.requests) == 1
