"""Size limits answer before any work: a request over a limit gets its 413/422 without the
tokenizer (or the chat template) being called once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tiny_engines import asgi_client

from service.engine import Engine

ASYNC = pytest.mark.asyncio(loop_scope="session")
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


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
        max_texts_per_request=2, max_messages_per_conversation=2, max_body_bytes=4096
    )


@ASYNC
async def test_over_limit_requests_never_reach_the_tokenizer(
    limited: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = TokenizerSpy(monkeypatch, limited.registry.get("default").backend.tokenizer)
    refused = [
        ("/v1/score/text", {"texts": ["a", "b", "c"]}, 413),
        ("/v1/score/chat", {"conversations": [CHAT, CHAT, CHAT]}, 413),
        ("/v1/score/chat", {"conversations": [[*CHAT, CHAT[0]]]}, 413),
        ("/v1/score/text", {"texts": ["a"], "return_tokens": True, "top_k": 21}, 422),
        ("/v1/score/text", {"texts": ["x" * 5000]}, 413),  # the body limit
    ]
    async with asgi_client(limited) as client:
        for path, body, status in refused:
            answer = await client.post(path, json=body)
            assert answer.status_code == status, (path, answer.text)
        assert spy.calls == 0
        ok = await client.post("/v1/score/text", json={"texts": ["a", "b"]})
        assert ok.status_code == 200
    assert spy.calls > 0  # the spy sees real work
