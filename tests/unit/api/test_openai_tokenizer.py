"""vLLM's tokenizer endpoints over ASGI: POST /tokenize, POST /detokenize, GET /tokenizer_info."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXTS = [
    "hello world",
    "hello , world . 'quoted'  two  spaces",
    "Grüße aus München 🍺",
    "Привет мир, как дела?",
    "日本語 テキスト 😀\nnew line\ttab",
]
CHAT = [
    {"role": "system", "content": "You score text."},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "hello world"},
]
ClientFactory = Callable[..., httpx.AsyncClient]


async def post(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post(url, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_error(response: httpx.Response, status: int, type_: str) -> str | None:
    """Checks the contract's error JSON; returns its param."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param"}
    assert error["type"] == type_ and error["message"]
    param: str | None = error["param"]
    return param


@pytest.mark.parametrize("text", TEXTS)
async def test_tokenize_prompt(client: httpx.AsyncClient, tokenizer: Any, text: str) -> None:
    body = await post(client, "/tokenize", prompt=text, add_special_tokens=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["tokens"] == ids and body["count"] == len(ids)
    assert body["max_model_len"] == 64 and body["token_strs"] is None
    with_strs = await post(client, "/tokenize", prompt=text, return_token_strs=True)
    assert with_strs["tokens"] == tokenizer(text)["input_ids"]  # special tokens by default
    assert with_strs["token_strs"] == tokenizer.convert_ids_to_tokens(with_strs["tokens"])


@pytest.mark.parametrize("add_generation_prompt", [True, False, None])
async def test_tokenize_messages(
    client: httpx.AsyncClient, tokenizer: Any, add_generation_prompt: bool | None
) -> None:
    body: dict[str, Any] = {"messages": CHAT[:2], "return_token_strs": True}
    if add_generation_prompt is not None:
        body["add_generation_prompt"] = add_generation_prompt
    response = await post(client, "/tokenize", **body)
    text = tokenizer.apply_chat_template(
        CHAT[:2], add_generation_prompt=add_generation_prompt is not False, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n") is (add_generation_prompt is not False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert response["tokens"] == ids and response["count"] == len(ids)
    assert response["token_strs"] == tokenizer.convert_ids_to_tokens(ids)
    assert response["tokens"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


@pytest.mark.parametrize(
    "rendering",
    [
        {},
        {"add_generation_prompt": False},
        {"add_generation_prompt": False, "continue_final_message": True},
        {"add_special_tokens": True},
    ],
)
@pytest.mark.parametrize(
    "messages",
    [
        CHAT,
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "you"}],
            }
        ],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}],
    ],
)
async def test_tokenize_messages_counts_what_chat_completions_scores(
    client: httpx.AsyncClient, messages: list[dict[str, Any]], rendering: dict[str, Any]
) -> None:
    """A vLLM client counts a conversation's tokens with /tokenize: the same ids as the chat
    door renders and scores, for every rendering option and message shape it takes."""
    body = {"messages": messages, **rendering}
    counted = await post(client, "/tokenize", **body)
    scored = await post(client, "/v1/chat/completions", max_tokens=0, return_token_ids=True, **body)
    assert counted["tokens"] == scored["prompt_token_ids"]
    assert counted["count"] == scored["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT, "chat_template": "{{ 'X' }}"}, "chat_template"),
        ({"messages": CHAT, "tools": [{"type": "function"}]}, "tools"),
        ({"messages": CHAT, "continue_final_message": True}, "continue_final_message"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ],
)
async def test_tokenize_messages_refuses_what_is_not_rendered(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    """What the chat door refuses (a request's own template, tools, both endings, unknown
    roles) is refused here too, never silently left out of the count."""
    assert assert_error(await client.post("/tokenize", json=body), 422, "invalid_request") == param


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"add_special_tokens": False},
        {"prompt": "hello", "messages": CHAT},
        {"prompt": 5},
        {"messages": "hello"},
        {"messages": [5]},
        {"messages": []},
        {"messages": [{"role": 5, "content": "hi"}]},
        {"messages": [{"role": "user", "content": ["not", "text"]}]},
    ],
)
async def test_tokenize_bad_requests(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    param = assert_error(await client.post("/tokenize", json=body), 422, "invalid_request")
    assert param is not None and param.split("[")[0] in ("prompt", "messages")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "a\\ud800b"}',
        b'{"messages": [{"role": "user", "content": "a\\udc00"}]}',
    ],
)
async def test_tokenize_lone_surrogates(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/tokenize", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


async def test_detokenize_inverts_tokenize(client: httpx.AsyncClient, tokenizer: Any) -> None:
    for text in TEXTS:
        ids = (await post(client, "/tokenize", prompt=text, add_special_tokens=False))["tokens"]
        assert await post(client, "/detokenize", tokens=ids) == {"prompt": text}
    chat = await post(client, "/tokenize", messages=CHAT)
    rendered = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    detok = await post(client, "/detokenize", tokens=chat["tokens"])
    assert detok["prompt"] == rendered  # special tokens are kept
    assert (await post(client, "/detokenize", tokens=[]))["prompt"] == ""


@pytest.mark.parametrize(
    ("tokens", "param"),
    [([5, 500], "tokens[1]"), ([-1], "tokens[0]"), ([5, 6, 2**70], "tokens[2]")],
)
async def test_detokenize_out_of_vocabulary(
    client: httpx.AsyncClient, tokens: list[int], param: str
) -> None:
    response = await client.post("/detokenize", json={"tokens": tokens})
    assert assert_error(response, 422, "invalid_request") == param


@pytest.mark.parametrize("body", [{}, {"tokens": "5 6"}, {"tokens": [5, True]}, {"tokens": [1.5]}])
async def test_detokenize_bad_shapes(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    param = assert_error(await client.post("/detokenize", json=body), 422, "invalid_request")
    assert param is not None and param.startswith("tokens")


async def test_tokenizer_info(client: httpx.AsyncClient, tokenizer: Any) -> None:
    for url in ("/tokenizer_info", "/tokenizer_info?model=default"):
        response = await client.get(url)
        assert response.status_code == 200, response.text
        info = response.json()
        assert info["eos_token"] == tokenizer.eos_token == "<|im_end|>"
        assert info["bos_token"] == tokenizer.bos_token == "<|im_start|>"
        assert info["pad_token"] == tokenizer.pad_token
        assert info["chat_template"] == tokenizer.chat_template
        assert info["model_max_length"] == 64
        assert info["eos_token_id"] == tokenizer.eos_token_id


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/tokenizer_info", params={"model": "nope"})
    assert assert_error(response, 404, "not_found") == "model"
    for url, body in (
        ("/tokenize", {"prompt": "hello", "model": "nope"}),
        ("/detokenize", {"tokens": [5], "model": "nope"}),
    ):
        assert assert_error(await client.post(url, json=body), 404, "not_found") == "model"


async def test_api_keys(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys=["secret"])
    calls = [
        ("POST", "/tokenize", {"prompt": "hello"}),
        ("POST", "/detokenize", {"tokens": [5, 6]}),
        ("GET", "/tokenizer_info", None),
    ]
    for method, url, body in calls:
        refused = await client.request(method, url, json=body)
        assert assert_error(refused, 401, "unauthorized") is None
        allowed = await client.request(
            method, url, json=body, headers={"Authorization": "Bearer secret"}
        )
        assert allowed.status_code == 200, allowed.text


async def test_tokenizer_routes_keep_the_request_timeout_and_count_in_flight(
    engine_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/tokenize and /detokenize hold the tokenizer thread scoring requests tokenize on:
    they answer 504 past --request-timeout-s and count in flight, so drain waits for them."""
    import asyncio
    import time

    from tiny_engines import asgi_client

    from service.api import tokenizer_routes

    engine = engine_factory(request_timeout_s=0.3)
    real = tokenizer_routes._tokenize
    in_flight_seen: list[int] = []

    def slow_tokenize(*args: Any) -> Any:
        in_flight_seen.append(engine.inflight)
        time.sleep(1.0)  # a very long text, say
        return real(*args)

    monkeypatch.setattr(tokenizer_routes, "_tokenize", slow_tokenize)
    async with asgi_client(engine) as client:
        answer = await client.post("/tokenize", json={"prompt": "hello world"})
        await asyncio.sleep(1.0)  # the thread finishes the abandoned call
        quick = await client.post("/detokenize", json={"tokens": [1, 2, 3]})
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["type"] == "timeout"
    assert in_flight_seen == [1] and engine.inflight == 0
    assert quick.status_code == 200
