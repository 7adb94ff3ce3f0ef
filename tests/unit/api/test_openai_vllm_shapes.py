"""The OpenAI-compatible doors as clients written for OpenAI and vLLM use them: optional
fields sent as null mean "not set"; chat's prompt fields at vLLM's place (the top of the
response); chat's tokens named by id with ``return_tokens_as_token_ids``; no -inf in JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.api.openai_chat import logprob_entry
from service.api.openai_logprobs import LOWEST_LOGPROB

pytestmark = pytest.mark.asyncio(loop_scope="session")

MESSAGES = [
    {"role": "user", "content": "hello world"},
    {"role": "assistant", "content": "the quick brown fox"},
]
COMPLETION = {"prompt": "the quick brown fox", "max_tokens": 1, "logprobs": 2}
CHAT = {"messages": MESSAGES, "max_tokens": 1, "logprobs": True, "top_logprobs": 2}
# Optional fields with a non-null default, as OpenAI's and vLLM's requests have them.
COMPLETION_NULLABLE = ["echo", "stream", "n", "return_token_ids", "return_tokens_as_token_ids",
                       "add_special_tokens", "ignore_eos", "include_stop_str_in_output"]  # fmt: skip
CHAT_NULLABLE = ["stream", "n", "echo", "add_generation_prompt", "continue_final_message",
                 "add_special_tokens", "return_token_ids", "ignore_eos"]  # fmt: skip


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


async def post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(url, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    ("url", "body", "fields"),
    [
        ("/v1/completions", COMPLETION, COMPLETION_NULLABLE),
        ("/v1/chat/completions", CHAT, CHAT_NULLABLE),
    ],
)
async def test_null_optional_fields_are_as_if_left_out(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], fields: list[str]
) -> None:
    plain = without_ids(await post(client, url, body))
    nulls = without_ids(await post(client, url, {**body, **dict.fromkeys(fields)}))
    assert json.dumps(nulls, sort_keys=True) == json.dumps(plain, sort_keys=True)
    if url == "/v1/chat/completions":
        as_null = await post(client, url, {**body, "logprobs": None, "top_logprobs": None})
        assert as_null["choices"][0]["logprobs"] is None  # chat's logprobs: null is false


async def test_null_undeclared_and_nested_fields_are_as_if_left_out(
    client: httpx.AsyncClient,
) -> None:
    # vLLM's own request models dumped whole send every field, most as null: a template
    # argument or a sampling field sent as null is not one asked for.
    extra = {"chat_template": None, "documents": None, "tools": None, "logit_bias": None,
             "presence_penalty": None, "frequency_penalty": None, "response_format": None}  # fmt: skip
    plain = without_ids(await post(client, "/v1/chat/completions", CHAT))
    nulls = without_ids(await post(client, "/v1/chat/completions", {**CHAT, **extra}))
    assert nulls == plain
    completion = {k: v for k, v in extra.items() if k not in ("chat_template", "documents", "tools")}  # fmt: skip
    plain = without_ids(await post(client, "/v1/completions", COMPLETION))
    assert without_ids(await post(client, "/v1/completions", {**COMPLETION, **completion})) == plain
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": None}}
    response = await client.post("/v1/chat/completions", json=streamed)
    assert response.status_code == 200, response.text
    assert '"usage"' not in response.text  # include_usage null: false, its default


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [("/v1/completions", COMPLETION, "prompt"), ("/v1/chat/completions", CHAT, "messages")],
)
async def test_a_required_field_sent_as_null_is_still_refused(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(url, json={**body, field: None})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == field


async def test_chat_prompt_fields_are_at_the_top_as_vllm_puts_them(
    client: httpx.AsyncClient,
) -> None:
    asked = {"messages": MESSAGES, "max_tokens": 0, "prompt_logprobs": 1, "return_token_ids": True}
    body = await post(client, "/v1/chat/completions", asked)
    (choice,) = body["choices"]
    assert body["prompt_logprobs"] == choice["prompt_logprobs"]
    assert body["prompt_token_ids"] == choice["prompt_token_ids"]
    assert body["prompt_logprobs"][0] is None and len(body["prompt_logprobs"]) > 5
    plain = await post(client, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 0})
    assert "prompt_logprobs" not in plain and "prompt_token_ids" not in plain

    streamed = {**asked, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=streamed)
    assert response.status_code == 200, response.text
    *events, done = [e[len("data: ") :] for e in response.text.split("\n\n") if e]
    first, usage = (json.loads(event) for event in events)
    assert done == "[DONE]"
    assert first["prompt_logprobs"] == body["prompt_logprobs"]
    assert first["prompt_token_ids"] == body["prompt_token_ids"]
    assert "prompt_logprobs" not in usage and usage["choices"] == []


async def test_chat_names_tokens_by_id_when_asked(client: httpx.AsyncClient) -> None:
    asked = {**CHAT, "return_tokens_as_token_ids": True, "return_token_ids": True}
    named = await post(client, "/v1/chat/completions", asked)
    plain = await post(client, "/v1/chat/completions", CHAT)
    (entry,) = named["choices"][0]["logprobs"]["content"]
    (want,) = plain["choices"][0]["logprobs"]["content"]
    (token,) = named["choices"][0]["token_ids"]
    assert entry["token"] == f"token_id:{token}"
    assert entry["bytes"] == list(entry["token"].encode("utf-8"))
    assert entry["logprob"] == pytest.approx(want["logprob"], rel=1e-4, abs=1e-5)
    assert all(top["token"].startswith("token_id:") for top in entry["top_logprobs"])
    assert len(entry["top_logprobs"]) == 2


async def test_a_token_the_model_rules_out_is_reported_as_minus_9999() -> None:
    entry = logprob_entry(lambda token: f"t{token}", 7, float("-inf"))
    assert entry.logprob == LOWEST_LOGPROB
    assert json.loads(entry.model_dump_json())["logprob"] == LOWEST_LOGPROB
