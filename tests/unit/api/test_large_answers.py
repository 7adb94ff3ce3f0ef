"""Answers with many per-token entries: bounded by --max-token-details on every door that
returns them, built and encoded off the event loop so other clients keep being answered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.api import json_body, openai_chat, openai_compat
from service.api.json_body import PIECE
from service.engine import Engine

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT = "the model scores every token of this text, one after another, " * 2
REPLY = "the model scores every token of this reply"
MESSAGES = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": REPLY}]


class ThreadSpy:
    """Wraps a module function; records whether each call ran with an event loop running
    in its thread (on the loop) and the thread's name, and calls ``also`` on each call."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        module: Any,
        name: str,
        also: Callable[[], None] = lambda: None,
    ) -> None:
        self.calls: list[tuple[bool, str]] = []
        original = getattr(module, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((_on_a_loop(), threading.current_thread().name))
            also()
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spied)


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_large_score_answer_is_encoded_off_the_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """return_tokens with 20 alternatives on a 40-token text is thousands of values:
    encoded on a worker thread, in pieces; a plain answer stays on the loop."""
    spy = ThreadSpy(monkeypatch, json_body, "encode")
    body = await post(
        client, "/v1/score/text", {"texts": [TEXT], "return_tokens": True, "top_k": 20}
    )
    tokens = body["results"][0]["tokens"]
    assert len(tokens) == body["results"][0]["num_tokens"] > 20
    assert all(len(t["top"]) == 20 for t in tokens[1:]) and "top" in tokens[0]
    assert spy.calls and not any(on_loop for on_loop, _ in spy.calls)
    spy.calls.clear()
    plain = await post(client, "/v1/score/text", {"texts": [TEXT]})
    assert plain["results"][0]["sum_logprob"] == pytest.approx(
        body["results"][0]["sum_logprob"], rel=1e-4
    )
    assert [on_loop for on_loop, _ in spy.calls] == [True]  # small: at once, on the loop


async def test_echoed_logprobs_are_built_on_the_preparation_thread(
    client: httpx.AsyncClient, tiny_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Echo with logprobs makes an entry per prompt token: the answer is built on the
    model's preparation thread and encoded off the loop; without echo it is built on it.
    Either way it is built within the request (counted in flight: a drain waits for it,
    the request's deadline covers it)."""
    in_flight: list[int] = []
    built = ThreadSpy(
        monkeypatch,
        openai_compat,
        "completion_response",
        also=lambda: in_flight.append(tiny_engine.inflight),
    )
    encoded = ThreadSpy(monkeypatch, json_body, "encode")
    request = {"prompt": [TEXT] * 3, "echo": True, "logprobs": 20, "max_tokens": 0}
    body = await post(client, "/v1/completions", request)
    assert [len(c["logprobs"]["tokens"]) > 20 for c in body["choices"]] == [True] * 3
    assert built.calls == [(False, built.calls[0][1])]
    assert built.calls[0][1].startswith("tokenize")
    assert encoded.calls and not any(on_loop for on_loop, _ in encoded.calls)
    built.calls.clear()
    await post(client, "/v1/completions", {"prompt": TEXT, "max_tokens": 1})
    assert built.calls and built.calls[0][0]  # nothing per token: built on the loop
    assert len(in_flight) == 2 and min(in_flight) >= 1


async def test_prompt_logprobs_of_a_conversation_are_built_off_the_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = ThreadSpy(monkeypatch, openai_chat, "chat_response")
    body = await post(
        client,
        "/v1/chat/completions",
        {"messages": MESSAGES, "prompt_logprobs": 20, "max_tokens": 0},
    )
    assert len(body["prompt_logprobs"]) > 20
    assert built.calls and not built.calls[0][0]


async def test_a_long_tokenization_is_encoded_off_the_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ThreadSpy(monkeypatch, json_body, "encode")
    text = "many words to tokenize " * (PIECE // 2)
    body = await post(client, "/tokenize", {"prompt": text, "return_token_strs": True})
    assert body["count"] == len(body["tokens"]) == len(body["token_strs"]) > PIECE
    assert spy.calls and not any(on_loop for on_loop, _ in spy.calls)


DETAILED = [  # (path, body, the field that asked for per-token entries)
    ("/v1/completions", {"prompt": TEXT, "echo": True, "logprobs": 5, "max_tokens": 0}, "echo"),
    ("/v1/completions", {"prompt": TEXT, "prompt_logprobs": 5, "max_tokens": 0},
     "prompt_logprobs"),
    ("/v1/completions", {"prompt": [TEXT, "a"], "echo": True, "logprobs": 1, "prompt_logprobs": 1,
     "max_tokens": 0}, "echo"),
    ("/v1/chat/completions", {"messages": MESSAGES, "prompt_logprobs": 5, "max_tokens": 0},
     "prompt_logprobs"),
    # Twice in a chat answer (top level and in the choice): 2 x 20 tokens x 3 > 100.
    ("/v1/chat/completions", {"messages": MESSAGES, "prompt_logprobs": 2, "max_tokens": 0},
     "prompt_logprobs"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), DETAILED)
async def test_per_token_entries_are_bounded_on_the_openai_doors(
    client_factory: Callable[..., httpx.AsyncClient],
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    """Prompts of up to the context each, up to --max-texts-per-request of them, with
    20 alternatives per token: without a bound that is millions of objects. The same
    bound as return_tokens applies (413 naming the field that asked)."""
    limited = client_factory(max_token_details=100)
    answer = await limited.post(path, json=body)
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert "--max-token-details" in error["message"]
    roomy = client_factory(max_token_details=100_000)
    assert (await roomy.post(path, json=body)).status_code == 200
    echo_only = {"prompt": TEXT, "echo": True, "max_tokens": 0}  # text only: nothing per token
    assert (await limited.post("/v1/completions", json=echo_only)).status_code == 200


async def test_a_prompt_over_the_context_is_refused_as_such(
    client_factory: Callable[..., httpx.AsyncClient],
) -> None:
    """Over the context and over the detail limit: the context is what to fix (422
    naming the prompt), not the number of alternatives."""
    limited = client_factory(max_token_details=100)
    body = {"prompt": TEXT * 4, "echo": True, "logprobs": 5, "max_tokens": 0}
    answer = await limited.post("/v1/completions", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == "prompt"
