"""POST /v1/chat/completions over ASGI: the conversation rendered by the model's template,
its prompt_logprobs (vLLM's shape) checked against a float64 reference of the tiny model
and against /v1/score/chat, the one greedy token with OpenAI's chat logprobs, streaming,
and what is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tiny_engines import asgi_client, make_engine
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL, batch_invariance_atol

from service.token_text import next_piece, shown_text

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/v1/chat/completions"
RefRows = Callable[[list[int]], np.ndarray]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello world"},
    {"role": "assistant", "content": "the quick brown fox jumps over a lazy dog 😀"},
]


async def chat(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(URL, json={"messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def rendered_ids(tokenizer: Any, messages: list[dict[str, str]], **template: Any) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, **template)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


async def test_prompt_logprobs_of_the_rendered_conversation_match_the_reference(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    ids = rendered_ids(tokenizer, MESSAGES, add_generation_prompt=False)
    body = await chat(
        client,
        max_tokens=0,
        prompt_logprobs=2,
        add_generation_prompt=False,
        return_token_ids=True,
    )
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["prompt_token_ids"] == ids and choice["token_ids"] == []
    assert choice["message"] == {"role": "assistant", "content": ""}
    assert choice["logprobs"] is None and choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 0,
        "total_tokens": len(ids),
    }
    entries = choice["prompt_logprobs"]
    assert len(entries) == len(ids) and entries[0] is None
    rows = reference_logprobs(ids)
    atol = batch_invariance_atol(rows)
    for p in range(1, len(ids)):
        entry, row = entries[p], rows[p - 1]
        assert next(iter(entry)) == str(ids[p])  # the prompt token first
        assert entry[str(ids[p])]["logprob"] == pytest.approx(row[ids[p]], abs=atol)
        for token in (int(t) for t in np.argsort(row)[::-1][:2]):
            assert entry[str(token)]["logprob"] == pytest.approx(row[token], abs=atol)


async def test_prompt_logprobs_agree_with_score_chat(client: httpx.AsyncClient) -> None:
    """The same conversation through both chat doors: the same tokens, the same logprobs."""
    body = await chat(client, max_tokens=0, prompt_logprobs=0, add_generation_prompt=False)
    entries = body["choices"][0]["prompt_logprobs"]
    scored = await client.post(
        "/v1/score/chat", json={"conversations": [MESSAGES], "return_tokens": True}
    )
    assert scored.status_code == 200, scored.text
    tokens = scored.json()["results"][0]["tokens"]
    assert len(tokens) == len(entries)
    for token, entry in zip(tokens[1:], entries[1:], strict=True):
        (key,) = entry
        assert key == str(token["id"])
        assert entry[key]["logprob"] == pytest.approx(
            token["logprob"], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )


async def test_the_generated_token_is_the_greedy_one_with_its_logprobs(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    asked = MESSAGES[:2]
    ids = rendered_ids(tokenizer, asked, add_generation_prompt=True)
    body = await chat(
        client, messages=asked, max_tokens=1, logprobs=True, top_logprobs=3, temperature=0
    )
    (choice,) = body["choices"]
    row = reference_logprobs([*ids, 0])[-1]  # the distribution after the prompt
    order = [int(t) for t in np.argsort(row)[::-1]]
    (entry,) = choice["logprobs"]["content"]
    top = entry["top_logprobs"]
    assert len(top) == 3
    atol = batch_invariance_atol(row)
    for item, token in zip(top, order[:3], strict=True):
        assert item["logprob"] == pytest.approx(row[token], abs=atol)
        assert item["token"] == tokenizer.decode([token])
        assert item["bytes"] == list(item["token"].encode("utf-8"))
    assert entry["logprob"] == top[0]["logprob"] and entry["token"] == top[0]["token"]
    best = order[0]
    special = best in tokenizer.all_special_ids
    want = "" if special else shown_text(next_piece(tokenizer, ids, best))
    assert choice["message"]["content"] == want
    assert choice["finish_reason"] == ("stop" if best == tokenizer.eos_token_id else "length")
    assert body["usage"]["completion_tokens"] == 1
    assert body["usage"]["prompt_tokens"] == len(ids)


async def test_stop_token_ids_end_the_message_with_stop(client: httpx.AsyncClient) -> None:
    asked = MESSAGES[:2]
    plain = await chat(client, messages=asked, max_tokens=1, return_token_ids=True)
    (token,) = plain["choices"][0]["token_ids"]
    stopped = await chat(client, messages=asked, max_tokens=1, stop_token_ids=[token])
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["choices"][0]["message"] == plain["choices"][0]["message"]


async def test_continue_final_message_leaves_it_open_and_echo_prepends_it(
    client: httpx.AsyncClient, tokenizer: Any
) -> None:
    opening = [*MESSAGES[:2], {"role": "assistant", "content": "the quick brown"}]
    ids = rendered_ids(tokenizer, opening, continue_final_message=True)
    body = await chat(
        client,
        messages=opening,
        add_generation_prompt=False,
        continue_final_message=True,
        echo=True,
        return_token_ids=True,
    )
    (choice,) = body["choices"]
    assert choice["prompt_token_ids"] == ids
    assert tokenizer.decode(ids).endswith("the quick brown")  # no end of turn after it
    (token,) = choice["token_ids"]
    special = token in tokenizer.all_special_ids
    piece = "" if special else shown_text(next_piece(tokenizer, ids, token))
    assert choice["message"]["content"] == "the quick brown" + piece


async def test_text_parts_read_as_their_joined_text(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    as_parts = await chat(
        client, messages=[{"role": "user", "content": parts}], max_tokens=0, return_token_ids=True
    )
    as_text = await chat(
        client,
        messages=[{"role": "user", "content": "hello\nworld"}],
        max_tokens=0,
        return_token_ids=True,
    )
    got = as_parts["choices"][0]["prompt_token_ids"]
    assert got == as_text["choices"][0]["prompt_token_ids"]


async def test_stream_sends_one_chunk_with_the_message_then_usage_then_done(
    client: httpx.AsyncClient,
) -> None:
    plain = await chat(client, logprobs=True, top_logprobs=1)
    response = await client.post(
        URL,
        json={
            "messages": MESSAGES,
            "logprobs": True,
            "top_logprobs": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    first, last = json.loads(events[0]), json.loads(events[1])
    assert first["object"] == "chat.completion.chunk" and first["usage"] is None
    (delta,) = first["choices"]
    assert delta["delta"] == plain["choices"][0]["message"]
    assert delta["finish_reason"] == plain["choices"][0]["finish_reason"]
    got = delta["logprobs"]["content"][0]["logprob"]
    assert got == pytest.approx(plain["choices"][0]["logprobs"]["content"][0]["logprob"], abs=1e-4)
    assert last["choices"] == [] and last["usage"] == plain["usage"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"temperature": 0.7}, "temperature"),
        ({"max_tokens": 2}, "max_tokens"),
        ({"max_completion_tokens": 5}, "max_completion_tokens"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"chat_template_kwargs": {"chat_template": "{{ 'x' }}"}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"tokenize": True}}, "chat_template_kwargs"),
        ({"chat_template": "{{ 'x' }}"}, "chat_template"),  # vLLM would apply it
        ({"tokenize": False}, "tokenize"),
        ({"documents": [{"title": "t", "text": "x"}]}, "documents"),
        ({"stop_token_ids": [-1]}, None),
        ({"continue_final_message": True}, "continue_final_message"),
        ({"logit_bias": {"5": 100}}, "logit_bias"),
        ({"stop": [""]}, "stop"),
        ({"messages": [{"role": "user", "content": "hello world " * 40}]}, "messages"),
    ],
)
async def test_what_is_refused_is_a_422_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], param: str | None
) -> None:
    response = await client.post(URL, json={"messages": MESSAGES, **change})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    if param is not None:
        assert error["param"] == param, error


async def test_an_unknown_model_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={"model": "nope", "messages": MESSAGES})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def _with_template(source: Path, target: Path, template: str | None) -> Path:
    """A copy of the tiny model whose tokenizer has ``template`` (None: no template)."""
    shutil.copytree(source, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (None, "no chat template"),
        ("{{ raise_exception('a system message is required') }}", "a system message is required"),
    ],
)
async def test_a_model_without_a_usable_template_is_a_422(
    tiny_model_dir: Path, tmp_path: Path, template: str | None, message: str
) -> None:
    engine = make_engine(_with_template(tiny_model_dir, tmp_path / "model", template))
    try:
        async with asgi_client(engine) as client:
            response = await client.post(URL, json={"messages": MESSAGES})
    finally:
        await engine.close()
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "messages" and message in error["message"]
