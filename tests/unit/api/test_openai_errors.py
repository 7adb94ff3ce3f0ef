"""POST /v1/completions: refusals in the contract's error JSON (never a 500), the limits,
what OpenAI clients send that is accepted, auth, and the metrics it moves."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL, ppl_rel

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/v1/completions"
LONG_TEXT = " ".join(["the quick brown fox jumps over a lazy dog"] * 20)
OVER_CONTEXT_IDS = [5] * 65  # the tiny model's context is 64
PROMPT_PARAM = re.compile(r"prompt(\[\d+\])*")  # the prompt, or one of its items
ClientFactory = Callable[..., httpx.AsyncClient]


def assert_error(
    response: httpx.Response, status: int, type_: str, param: str | re.Pattern[str] | None
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param"}
    assert body["error"]["type"] == type_
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if isinstance(param, re.Pattern):
        assert param.fullmatch(body["error"]["param"] or ""), body["error"]
    else:
        assert body["error"]["param"] == param


BAD_REQUESTS: list[tuple[dict[str, Any], str | re.Pattern[str]]] = [
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "logprobs": -1}, "logprobs"),
    ({"prompt": "x", "max_tokens": 2}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 16}, "max_tokens"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "temperature": 0.7, "max_tokens": 1}, "temperature"),
    ({"prompt": "x", "temperature": 0.7}, "temperature"),  # max_tokens defaults to 1
    ({"prompt": "x", "temperature": -1, "max_tokens": 0}, "temperature"),
    ({"prompt": "x", "top_p": 0.5, "max_tokens": 1}, "top_p"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "stream": "maybe"}, "stream"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "stop": ""}, "stop"),
    ({"prompt": "x", "stop": ["\n", ""]}, "stop"),
    ({"prompt": "x", "echo": "maybe"}, "echo"),
    ({}, "prompt"),
    ({"prompt": ""}, PROMPT_PARAM),
    ({"prompt": []}, PROMPT_PARAM),
    ({"prompt": [[]]}, PROMPT_PARAM),
    ({"prompt": [""]}, "prompt[0]"),
    ({"prompt": ["fine", ""]}, "prompt[1]"),
    ({"prompt": [[1, 2], []]}, "prompt[1]"),
    ({"prompt": ["fine", "ok", 7]}, "prompt[2]"),
    ({"prompt": [[1, True]]}, PROMPT_PARAM),
    ({"prompt": [1.5, 2]}, PROMPT_PARAM),
    ({"prompt": 5}, PROMPT_PARAM),
    ({"prompt": None}, PROMPT_PARAM),
    ({"prompt": {"text": "x"}}, PROMPT_PARAM),
    ({"prompt": [[5, 500]]}, "prompt[0][1]"),
    ({"prompt": [5, 6, -1]}, "prompt[2]"),
    ({"prompt": ["fine", [5, 10**6]]}, "prompt[1][1]"),
    ({"prompt": [5, 2**70]}, "prompt[1]"),
    ({"prompt": LONG_TEXT, "max_tokens": 0}, "prompt"),
    ({"prompt": ["fine", LONG_TEXT]}, "prompt[1]"),
    ({"prompt": OVER_CONTEXT_IDS}, "prompt"),
    ({"prompt": [[5, 6], OVER_CONTEXT_IDS], "echo": True, "logprobs": 1}, "prompt[1]"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REQUESTS)
async def test_bad_requests(
    client: httpx.AsyncClient, body: dict[str, Any], param: str | re.Pattern[str]
) -> None:
    assert_error(await client.post(URL, json=body), 422, "invalid_request", param)


async def test_over_context_message_offers_nothing_this_door_ignores(
    client: httpx.AsyncClient,
) -> None:
    """The completions door has no overflow option, so its context error must not suggest
    one (/v1/score/text's does)."""
    answer = await client.post(URL, json={"prompt": OVER_CONTEXT_IDS, "max_tokens": 0})
    assert_error(answer, 422, "invalid_request", "prompt")
    assert "context" in answer.json()["error"]["message"]
    assert "overflow" not in answer.json()["error"]["message"]
    text = await client.post("/v1/score/text", json={"texts": [LONG_TEXT]})
    assert "overflow" in text.json()["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"prompt": "a\\ud800b", "max_tokens": 0}', "prompt"),
        (b'{"prompt": ["ok", "\\udc00"], "echo": true}', "prompt[1]"),
    ],
)
async def test_lone_surrogates(client: httpx.AsyncClient, raw: bytes, param: str) -> None:
    response = await client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request", param)


async def test_unparseable_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        URL, content=b'{"prompt": "x"', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request", None)


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={"prompt": "hello", "model": "gpt-3.5-turbo-instruct"})
    assert_error(response, 404, "not_found", "model")
    assert "default" in response.json()["error"]["message"]


ACCEPTED = [
    {"temperature": 0.7, "max_tokens": 0, "echo": True, "logprobs": 1},  # only scoring
    {"top_p": 0.5, "max_tokens": 0, "echo": True},
    {"temperature": 0, "top_p": 1, "max_tokens": 1, "logprobs": 0},
    {"temperature": 0.0, "max_tokens": None, "logprobs": None, "top_p": None},
    {"n": 1, "best_of": 1, "stream": False, "seed": 1234, "user": "me", "stop": ["\n\n"]},
    {
        "frequency_penalty": 0,
        "presence_penalty": 0,
        "logit_bias": {},
        "suffix": None,
        "allowed_token_ids": None,
        "repetition_penalty": 1.0,
        "min_tokens": 0,
        "stop": "\n",
        "stream_options": None,
    },
]


STEERING = [
    {"logit_bias": {"42": 100}},
    {"allowed_token_ids": [42]},
    {"bad_words": ["Paris"]},
    {"repetition_penalty": 1.3},
    {"min_tokens": 1},
    {"suffix": " and so on"},
]


@pytest.mark.parametrize("extra", STEERING)
async def test_a_steer_of_the_generated_token_is_refused(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    """Not applied here, so refused rather than answered with an unsteered token; with
    nothing generated (max_tokens 0) it changes nothing (the same logprobs as without
    it) and is accepted."""
    body = {"prompt": "hello world", "max_tokens": 1, **extra}
    response = await client.post(URL, json=body)
    assert_error(response, 422, "invalid_request", next(iter(extra)))
    scoring = await client.post(URL, json=body | {"max_tokens": 0, "echo": True, "logprobs": 1})
    assert scoring.status_code == 200, scoring.text
    plain = {"prompt": "hello world", "max_tokens": 0, "echo": True, "logprobs": 1}
    unsteered = await client.post(URL, json=plain)
    got, want = (r.json()["choices"][0]["logprobs"] for r in (scoring, unsteered))
    assert got["tokens"] == want["tokens"]
    assert got["token_logprobs"][0] is None is want["token_logprobs"][0]
    assert got["token_logprobs"][1:] == pytest.approx(
        want["token_logprobs"][1:], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )


@pytest.mark.parametrize("extra", ACCEPTED)
async def test_accepted_openai_fields(client: httpx.AsyncClient, extra: dict[str, Any]) -> None:
    response = await client.post(URL, json={"model": "default", "prompt": "hello world", **extra})
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["text"]


async def test_prompt_at_the_context_limit(client: httpx.AsyncClient) -> None:
    ids = OVER_CONTEXT_IDS[:64]
    response = await client.post(
        URL, json={"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1}
    )
    assert response.status_code == 200, response.text
    lp = response.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 65 and lp["token_logprobs"][-1] is not None


async def test_max_context_setting(client_factory: ClientFactory) -> None:
    client = client_factory(max_context=8)
    fits = await client.post(URL, json={"prompt": [5] * 8, "max_tokens": 1})
    assert fits.status_code == 200, fits.text
    over = await client.post(URL, json={"prompt": [[5] * 3, [5] * 9], "max_tokens": 0})
    assert_error(over, 422, "invalid_request", "prompt[1]")


async def test_too_many_prompts(client_factory: ClientFactory) -> None:
    client = client_factory(max_texts_per_request=2)
    too_many: list[Any] = [["a", "b", "c"], [[5], [6], [7]], ["a", [6], "c"]]
    for prompt in too_many:
        response = await client.post(URL, json={"prompt": prompt, "max_tokens": 0})
        assert_error(response, 413, "too_large", "prompt")
    fine: list[Any] = [["a b", "c d"], [5, 6, 7, 8]]  # a flat id list is one prompt
    for prompt in fine:
        response = await client.post(URL, json={"prompt": prompt, "max_tokens": 0})
        assert response.status_code == 200, response.text


async def test_api_keys(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys=["secret"])
    body = {"prompt": "hello world", "echo": True, "logprobs": 1, "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
        assert_error(await client.post(URL, json=body, headers=headers), 401, "unauthorized", None)
    ok = await client.post(URL, json=body, headers={"Authorization": "Bearer secret"})
    assert ok.status_code == 200, ok.text


async def test_still_healthy_after_bad_requests(client: httpx.AsyncClient) -> None:
    for body, _ in BAD_REQUESTS:
        assert (await client.post(URL, json=body)).status_code < 500
    response = await client.post(URL, json={"prompt": ["hello world", [5, 6, 7]], "echo": True})
    assert response.status_code == 200, response.text
    assert [c["index"] for c in response.json()["choices"]] == [0, 1]


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return Scrape(response.text)


async def test_metrics(client: httpx.AsyncClient) -> None:
    requests = {"endpoint": "completions", "protocol": "http"}
    ppl = {"model": "default", "endpoint": "completions"}
    before = await scrape(client)
    scored = await client.post(
        URL,
        json={
            "prompt": ["hello world, the quick brown fox", "Grüße aus München", "hello"],
            "echo": True,
            "logprobs": 0,
            "max_tokens": 0,
        },
    )
    assert scored.status_code == 200, scored.text
    generated = await client.post(URL, json={"prompt": "a lazy dog", "max_tokens": 1})
    assert generated.status_code == 200, generated.text
    refused = await client.post(URL, json={"prompt": "x", "max_tokens": 5})
    assert refused.status_code == 422
    after = await scrape(client)

    total = "lmscore_requests_total"
    assert after.value(total, code="200", **requests) == (
        before.value(total, code="200", **requests) + 2
    )
    assert after.value(total, code="422", **requests) == (
        before.value(total, code="422", **requests) + 1
    )
    # One PPL per prompt with a scored token: "hello" is a single token, "a lazy dog" counts.
    ppls = []
    for choice in scored.json()["choices"]:
        lps = choice["logprobs"]["token_logprobs"][1:]
        if lps:
            ppls.append(math.exp(-sum(lps) / len(lps)))
    assert len(ppls) == 2
    count, total_ppl = "lmscore_text_ppl_count", "lmscore_text_ppl_sum"
    assert after.value(count, **ppl) == before.value(count, **ppl) + 3
    dog = await client.post("/v1/score/text", json={"texts": ["a lazy dog"]})
    ppls.append(dog.json()["results"][0]["ppl"])
    grown = after.value(total_ppl, **ppl) - before.value(total_ppl, **ppl)
    # Separate requests (and logprobs rounded through JSON): the contract's tolerance.
    assert grown == pytest.approx(sum(ppls), rel=ppl_rel(max(ppls)))


async def test_token_ids_over_the_context_are_refused_before_any_decoding(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long id prompt is refused from its length alone: building its sequence decodes
    every id on the model's one preparation thread (a million ids held every request to
    that model for seconds)."""
    from service import sequences

    def never(*args: Any) -> Any:
        raise AssertionError("the ids were decoded")

    monkeypatch.setattr(sequences, "ids_sequence", never)
    for prompt, param in (([7] * 100_000, "prompt"), ([[5, 6], [7] * 100_000], "prompt[1]")):
        answer = await client.post(URL, json={"prompt": prompt, "max_tokens": 0})
        assert_error(answer, 422, "invalid_request", param)
        assert "exceed the model's context of 64" in answer.json()["error"]["message"]
