"""The text a generated token adds on the OpenAI-compatible doors: a token that ends inside
a multi-byte character adds nothing (as vLLM's incremental detokenizer holds the character
back), while its logprobs entry still names it; no stop string is found in held-back text.
Checked against a float64 reference of the tiny model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.token_text import next_piece, shown_text

pytestmark = pytest.mark.asyncio(loop_scope="session")

RefRows = Callable[[list[int]], np.ndarray]
CANDIDATES = ["a", "hello world", "b", "the", "yes", "cat", "😀", "Привет", "日本", "ü", "1"]


def greedy_piece(tokenizer: Any, reference_logprobs: RefRows, ids: list[int]) -> str | None:
    """The text the greedy token after ``ids`` adds; None on a near tie float32 may flip."""
    dist = reference_logprobs([*ids, 0])[-1]
    best, second = np.argsort(dist)[::-1][:2]
    if dist[best] - dist[second] < 1e-3:
        return None
    return next_piece(tokenizer, ids, int(best))


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def ending_inside_a_character(
    tokenizer: Any, reference_logprobs: RefRows, render: Callable[[str], str]
) -> tuple[str, str]:
    """A candidate whose rendered prompt's greedy next token ends inside a character on
    the tiny model, and that token's piece (ending in U+FFFD)."""
    for candidate in CANDIDATES:
        piece = greedy_piece(tokenizer, reference_logprobs, encode(tokenizer, render(candidate)))
        if piece is not None and piece.endswith("\ufffd"):
            return candidate, piece
    raise AssertionError("no candidate's greedy token ends inside a character: add one")


@pytest.mark.asyncio(loop_scope="session")
async def test_shown_text_holds_back_an_incomplete_character() -> None:
    assert shown_text("\ufffd") == "" and shown_text("ab\ufffd") == ""
    assert shown_text("ü") == "ü" and shown_text("") == "" and shown_text("\ufffdx") == "\ufffdx"


async def test_a_completion_ending_inside_a_character_adds_no_text(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    prompt, piece = ending_inside_a_character(tokenizer, reference_logprobs, lambda c: c)
    body = {"prompt": prompt, "max_tokens": 1, "logprobs": 1, "echo": True}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["text"] == prompt  # the echo, and nothing of the incomplete character
    assert choice["logprobs"]["tokens"][-1] == piece
    assert choice["finish_reason"] == "length"
    stopped = await client.post("/v1/completions", json={**body, "stop": "\ufffd"})
    assert stopped.json()["choices"][0]["finish_reason"] == "length"  # nothing to stop at


async def test_a_chat_reply_ending_inside_a_character_is_empty(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    def render(content: str) -> str:
        messages = [{"role": "user", "content": content}]
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    content, _ = ending_inside_a_character(tokenizer, reference_logprobs, render)
    body = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "logprobs": True,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["message"]["content"] == ""
    assert choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["content"]) == 1  # the token is still reported
