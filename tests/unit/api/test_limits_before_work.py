"""Size limits answer before any work: a request over a limit gets its 413/422 without the
tokenizer (or the chat template) being called once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from tiny_engines import asgi_client

from service.engine import Engine

ASYNC = pytest.mark.asyncio(loop_scope="session")
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
LONG_CHARS = 40
LONG = "y" * LONG_CHARS  # one character over the limit of the ``limited`` engine
REFUSED = [  # (path, body, status, the refused field)
    ("/v1/score/text", {"texts": ["a", "b", "c"]}, 413, "texts"),
    ("/v1/score/text", {"texts": ["a", LONG]}, 413, "texts[1]"),
    ("/v1/score/chat", {"conversations": [CHAT, CHAT, CHAT]}, 413, "conversations"),
    ("/v1/score/chat", {"conversations": [[*CHAT, CHAT[0]]]}, 413, "conversations[0]"),
    ("/v1/score/chat", {"conversations": [[CHAT[0], {"role": "assistant", "content": LONG}]]},
     413, "conversations[0][1].content"),
    ("/v1/score/text", {"texts": ["a"], "return_tokens": True, "top_k": 21}, 422, "top_k"),
    ("/v1/score/continuations", {"context": "a", "continuations": ["b", "c", "d"]}, 413,
     "continuations"),
    ("/v1/score/continuations", {"context": LONG, "continuations": ["b"]}, 413, "context"),
    ("/v1/score/continuations", {"context": "a", "continuations": ["b", LONG]}, 413,
     "continuations[1]"),
    ("/v1/score/compare", {"texts": ["a", LONG], "models": ["default", "default"]}, 413,
     "texts[1]"),
    ("/v1/completions", {"prompt": ["a", "b", "c"], "max_tokens": 0, "echo": True}, 413,
     "prompt"),
    ("/v1/completions", {"prompt": LONG, "max_tokens": 0, "echo": True}, 413, "prompt"),
    ("/v1/completions", {"prompt": [list(range(LONG_CHARS))], "max_tokens": 0, "echo": True},
     413, "prompt[0]"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 0, "echo": True, "logprobs": 21}, 422,
     "logprobs"),
    ("/tokenize", {"prompt": LONG}, 413, "prompt"),
    ("/tokenize", {"messages": [*CHAT, CHAT[0]]}, 413, "messages"),
    ("/tokenize", {"messages": [{"role": "user", "content": LONG}]}, 413, "messages[0].content"),
    ("/detokenize", {"tokens": list(range(LONG_CHARS))}, 413, "tokens"),
    ("/v1/score/text", {"texts": ["x" * 5000]}, 413, "body"),
]  # fmt: skip


class TokenizerSpy:
    """Counts calls of the tokenizer class's ``__call__`` and ``apply_chat_template``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> None:
        self.calls = 0
        cls = type(tokenizer)
        for name in ("__call__", "apply_chat_template"):
            original = getattr(cls, name)

            def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.calls += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, name, counting)


@pytest.fixture
def limited(engine_factory: Callable[..., Engine]) -> Iterator[Engine]:
    yield engine_factory(
        max_texts_per_request=2,
        max_messages_per_conversation=2,
        max_chars_per_text=LONG_CHARS - 1,
        max_body_bytes=4096,
    )


@ASYNC
async def test_over_limit_requests_never_reach_the_tokenizer(
    limited: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = TokenizerSpy(monkeypatch, limited.registry.get("default").backend.tokenizer)
    async with asgi_client(limited) as client:
        for path, body, status, param in REFUSED:
            answer = await client.post(path, json=body)
            assert answer.status_code == status, (path, body, answer.text)
            assert answer.json()["error"]["param"] == param, (path, body, answer.text)
        assert spy.calls == 0
        ok = await client.post("/v1/score/text", json={"texts": ["a", "b"]})
        assert ok.status_code == 200
    assert spy.calls > 0  # the spy sees real work


@ASYNC
async def test_a_chunked_body_over_the_limit_is_refused_while_streaming(
    limited: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Content-Length to check up front: the limit applies to the bytes as they come."""
    spy = TokenizerSpy(monkeypatch, limited.registry.get("default").backend.tokenizer)
    sent: list[int] = []

    async def chunks(total: int) -> AsyncIterator[bytes]:
        body = json.dumps({"texts": ["x" * (total - 14)]}).encode()
        for start in range(0, len(body), 512):
            sent.append(start)
            yield body[start : start + 512]

    async with asgi_client(limited) as client:
        answer = await client.post("/v1/score/text", content=chunks(64 * 1024))
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == {
            "type": "too_large",
            "message": "request body exceeds 4096 bytes",
            "param": "body",
        }
        assert spy.calls == 0
        assert len(sent) < 64 * 1024 // 512  # stopped reading early, not after the whole body
        small = await client.post("/v1/score/text", content=chunks(40))
        assert small.status_code == 200, small.text


@ASYNC
async def test_refusals_name_what_the_limit_counts(limited: Engine) -> None:
    """A conversation's message limit says so (it is not per request), and an empty text
    is called a string too short, not an empty list."""
    async with asgi_client(limited) as client:
        body = {"conversations": [[*CHAT, CHAT[0]]]}
        answer = (await client.post("/v1/score/chat", json=body)).json()["error"]
        assert answer["message"].endswith("exceed the limit of 2 per conversation")
        answer = (await client.post("/v1/score/text", json={"texts": ["a", ""]})).json()["error"]
        assert answer["param"] == "texts[1]"
        assert answer["message"] == "texts[1]: String should have at least 1 character"


@ASYNC
async def test_a_body_that_stops_arriving_times_out(
    engine_factory: Callable[..., Engine],
) -> None:
    """A client that declares a body and stops sending it is answered 504 once the
    request timeout has passed, instead of holding its connection for good."""
    import asyncio

    from service.api.rest import create_app

    app = create_app(engine_factory(request_timeout_s=0.3))
    parts = [{"type": "http.request", "body": b'{"texts": ', "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop(0)
        await asyncio.sleep(3600)  # the rest of the body never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/score/text",
        "raw_path": b"/v1/score/text",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 504, body
    error = json.loads(body)["error"]
    assert error["type"] == "timeout" and error["param"] == "body"
