"""POST /v1/completions with ``stream: true``: OpenAI's server-sent events carry the same
choices as the plain response, one whole choice per chunk, then usage when asked, then
``[DONE]``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/v1/completions"
PROMPTS = ["hello world", "Grüße aus München 🍺", "the quick brown fox"]


async def events(client: httpx.AsyncClient, **body: Any) -> list[str]:
    """The ``data:`` payloads of a streamed completion, in order."""
    async with client.stream("POST", URL, json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.aread()).decode()
    blocks = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks), text
    return [block.removeprefix("data: ") for block in blocks]


def assert_same_choice(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal choices; floats within the contract's batch tolerance (two forward passes)."""
    assert got["index"] == want["index"] and got["text"] == want["text"]
    assert got["finish_reason"] == want["finish_reason"]
    assert (got["logprobs"] is None) == (want["logprobs"] is None)
    if got["logprobs"] is None:
        return
    for key in ("tokens", "text_offset"):
        assert got["logprobs"][key] == want["logprobs"][key]
    tolerance = {"rel": BATCH_INVARIANCE_REL, "abs": BATCH_INVARIANCE_ABS}
    got_lps, want_lps = got["logprobs"]["token_logprobs"], want["logprobs"]["token_logprobs"]
    assert [x is None for x in got_lps] == [x is None for x in want_lps]
    assert [x for x in got_lps if x is not None] == pytest.approx(
        [x for x in want_lps if x is not None], **tolerance
    )
    for got_top, want_top in zip(
        got["logprobs"]["top_logprobs"], want["logprobs"]["top_logprobs"], strict=True
    ):
        assert (got_top is None and want_top is None) or got_top == pytest.approx(
            want_top, **tolerance
        )


@pytest.mark.parametrize("generate", [0, 1])
async def test_stream_carries_the_plain_response(client: httpx.AsyncClient, generate: int) -> None:
    body = {"prompt": PROMPTS, "echo": True, "logprobs": 2, "max_tokens": generate}
    plain = (await client.post(URL, json=body)).json()
    payloads = await events(client, **body)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == len(PROMPTS)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    for chunk, want in zip(chunks, plain["choices"], strict=True):
        assert set(chunk) == {"id", "object", "created", "model", "choices"}
        assert chunk["object"] == "text_completion" and chunk["model"] == "default"
        (choice,) = chunk["choices"]
        assert_same_choice(choice, want)


async def test_usage_comes_last_when_asked(client: httpx.AsyncClient) -> None:
    body = {"prompt": PROMPTS[:2], "max_tokens": 1, "stream_options": {"include_usage": True}}
    plain = await client.post(URL, json={k: v for k, v in body.items() if k != "stream_options"})
    payloads = await events(client, **body)
    assert payloads[-1] == "[DONE]"
    *choices, usage = (json.loads(p) for p in payloads[:-1])
    assert len(choices) == 2 and all(c["usage"] is None for c in choices)
    assert usage["choices"] == [] and usage["usage"] == plain.json()["usage"]
    assert usage["usage"]["completion_tokens"] == 2


async def test_errors_are_plain_json_before_any_event(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={"prompt": "", "stream": True})
    assert answer.status_code == 422
    assert answer.json()["error"]["param"] == "prompt"
    missing = await client.post(URL, json={"prompt": "hi", "stream": True, "model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
