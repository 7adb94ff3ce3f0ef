"""POST /v1/completions over ASGI: the legacy echo + logprobs shape that lm-evaluation-harness
``local-completions`` and the ``openai`` client parse, checked against /v1/score/text on
the same engine and against a float64 reference of the tiny model."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL

from service.token_text import next_piece, shown_text

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/v1/completions"
TEXT_URL = "/v1/score/text"
TEXTS = [
    "hello world",
    "the quick brown fox jumps over a lazy dog.",
    "Grüße aus München 🍺",
    "Привет мир, как дела? спасибо",
    "日本語 テキスト 😀 naïve façade",
]
ClientFactory = Callable[..., httpx.AsyncClient]
RefRows = Callable[[list[int]], np.ndarray]


async def complete(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(URL, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def score_tokens(client: httpx.AsyncClient, text: str, top_k: int) -> list[dict[str, Any]]:
    body = {"texts": [text], "return_tokens": True, "top_k": top_k}
    response = await client.post(TEXT_URL, json=body)
    assert response.status_code == 200, response.text
    return list(response.json()["results"][0]["tokens"])


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def next_logprobs(reference_logprobs: RefRows, ids: list[int]) -> np.ndarray:
    """float64 log-softmax of the token after ``ids`` (the row a dummy last token adds)."""
    return reference_logprobs([*ids, 0])[-1]


def greedy(reference_logprobs: RefRows, ids: list[int]) -> tuple[int, int, np.ndarray]:
    """(argmax, runner-up, distribution) after ``ids``; skips a near tie float32 may flip."""
    dist = next_logprobs(reference_logprobs, ids)
    best, second = (int(i) for i in np.argsort(dist)[::-1][:2])
    if dist[best] - dist[second] < 1e-3:
        pytest.skip("near tie in the reference distribution")
    return best, second, dist


def check_logprobs_object(choice: dict[str, Any], k: int) -> dict[str, Any]:
    """Invariants of every legacy logprobs object; returns it."""
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = len(lp["tokens"])
    assert len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    # The text is the tokens' text, but for a generated last token ending inside a
    # character: it shows as U+FFFD there and adds nothing to the text.
    shown = [*lp["tokens"][:-1], shown_text(lp["tokens"][-1])] if n else []
    assert "".join(shown) == choice["text"]
    assert (
        lp["text_offset"]
        == list(itertools.accumulate((len(t) for t in lp["tokens"]), initial=0))[:-1]
    )
    for piece, logprob, top in zip(
        lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True
    ):
        assert (logprob is None) == (top is None)
        if logprob is None:
            continue
        assert logprob <= 0.0 and len(top) <= k + 1
        # The chosen token's own entry is the very float of token_logprobs (only a different
        # token decoding to the same text, and more likely, may raise it).
        assert top[piece] >= logprob
    return dict(lp)


async def test_response_shape(client: httpx.AsyncClient, tokenizer: Any) -> None:
    prompt = "the quick brown fox"
    before = int(time.time())
    response = await client.post(
        URL, json={"prompt": prompt, "echo": True, "logprobs": 3, "max_tokens": 0}
    )
    assert response.status_code == 200, response.text
    for header in ("x-queue-time-ms", "x-inference-time-ms"):
        assert float(response.headers[header]) >= 0
    body = response.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["id"].startswith("cmpl-") and len(body["id"]) > len("cmpl-")
    assert body["object"] == "text_completion" and body["model"] == "default"
    assert isinstance(body["created"], int) and before - 1 <= body["created"] <= time.time() + 1
    (choice,) = body["choices"]
    assert set(choice) == {"index", "text", "logprobs", "finish_reason"}
    assert choice["index"] == 0 and choice["text"] == prompt
    assert choice["finish_reason"] in ("length", "stop")
    lp = check_logprobs_object(choice, 3)
    n = len(encode(tokenizer, prompt))
    assert len(lp["tokens"]) == n
    assert body["usage"] == {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}
    other = await complete(client, prompt=prompt, echo=True, logprobs=3, max_tokens=0)
    assert other["id"] != body["id"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("k", [0, 1, 5])
async def test_echo_matches_score_text(
    client: httpx.AsyncClient, tokenizer: Any, text: str, k: int
) -> None:
    body = await complete(client, prompt=text, echo=True, logprobs=k, max_tokens=0)
    (choice,) = body["choices"]
    assert choice["text"] == text
    lp = check_logprobs_object(choice, k)
    assert "".join(lp["tokens"]) == text
    assert len(lp["tokens"]) == len(encode(tokenizer, text))
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None

    tokens = await score_tokens(client, text, k)
    assert lp["tokens"] == [t["text"] for t in tokens]
    # Two requests, two forward passes (completions may add a next-token row): the contract's
    # batch tolerance, not one CPU's rounding.
    assert lp["token_logprobs"][1:] == pytest.approx(
        [t["logprob"] for t in tokens[1:]], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    for j in range(1, len(tokens)):
        piece, logprob, top = lp["tokens"][j], lp["token_logprobs"][j], lp["top_logprobs"][j]
        expected: dict[str, float] = {}
        for alt in tokens[j].get("top") or []:
            expected[alt["text"]] = max(expected.get(alt["text"], -np.inf), alt["logprob"])
        expected[piece] = max(expected.get(piece, -np.inf), tokens[j]["logprob"])
        # expected holds the score/text request's floats: the contract's tolerance.
        assert top == pytest.approx(expected, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS)
        collides = any(
            alt["text"] == piece and alt["id"] != tokens[j]["id"] and alt["logprob"] > logprob
            for alt in tokens[j].get("top") or []
        )
        if not collides:
            assert top[piece] == logprob  # exactly the float of token_logprobs
        if k == 0:
            assert top == {piece: logprob}


async def test_without_logprobs(client: httpx.AsyncClient) -> None:
    body = await complete(client, prompt="hello world", echo=True, max_tokens=0)
    assert body["choices"][0] == {
        "index": 0,
        "text": "hello world",
        "logprobs": None,
        "finish_reason": body["choices"][0]["finish_reason"],
    }
    quiet = await complete(client, prompt="hello world", max_tokens=0)
    assert quiet["choices"][0]["text"] == "" and quiet["choices"][0]["logprobs"] is None
    listed = await complete(client, prompt="hello world", max_tokens=0, logprobs=2)
    assert listed["choices"][0]["logprobs"]["tokens"] == []


async def test_one_greedy_token_is_the_reference_argmax(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    k = 5
    body = await complete(client, prompt=TEXTS, echo=True, logprobs=k, max_tokens=1, temperature=0)
    assert [c["index"] for c in body["choices"]] == list(range(len(TEXTS)))
    prompt_tokens = 0
    for text, choice in zip(TEXTS, body["choices"], strict=True):
        ids = encode(tokenizer, text)
        prompt_tokens += len(ids)
        lp = check_logprobs_object(choice, k)
        assert len(lp["tokens"]) == len(ids) + 1
        assert "".join(lp["tokens"][:-1]) == text
        best, _, dist = greedy(reference_logprobs, ids)
        piece = next_piece(tokenizer, ids, best)
        assert lp["tokens"][-1] == piece
        assert choice["text"] == text + shown_text(piece)
        assert lp["text_offset"][-1] == len(text)
        generated, top = lp["token_logprobs"][-1], lp["top_logprobs"][-1]
        # Batched with the other prompts vs a lone float64 forward: the contract's tolerance.
        assert generated == pytest.approx(
            dist[best], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
        assert generated == max(top.values()) == top[piece]  # exact: greedy by equality
        ranked = np.argsort(dist)[::-1]
        if dist[ranked[k - 1]] - dist[ranked[k]] > 1e-3:  # the reference top-k is unambiguous
            expected: dict[str, float] = {}
            for token in ranked[:k]:
                key = tokenizer.decode([int(token)])
                expected[key] = max(expected.get(key, -np.inf), float(dist[token]))
            expected[piece] = max(expected.get(piece, -np.inf), float(dist[best]))
            assert top == pytest.approx(
                expected, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
            )
    n = len(TEXTS)
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "total_tokens": prompt_tokens + n,
    }


async def test_generation_without_echo(client: httpx.AsyncClient) -> None:
    prompt = "the quick brown fox"
    echoed = await complete(client, prompt=prompt, echo=True, logprobs=2, max_tokens=1)
    full = echoed["choices"][0]["logprobs"]
    piece, logprob, top = full["tokens"][-1], full["token_logprobs"][-1], full["top_logprobs"][-1]

    alone = await complete(client, prompt=prompt, logprobs=2, max_tokens=1, temperature=0.0)
    (choice,) = alone["choices"]
    assert choice["text"] == piece
    lp = check_logprobs_object(choice, 2)
    assert lp["tokens"] == [piece] and lp["text_offset"] == [0]
    # Another request and another forward pass than the echoed one: the contract's tolerance.
    assert lp["token_logprobs"] == pytest.approx(
        [logprob], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    assert lp["top_logprobs"][0] == pytest.approx(
        top, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    assert alone["usage"]["completion_tokens"] == 1

    chosen_only = await complete(client, prompt=prompt, logprobs=0, max_tokens=1)
    assert chosen_only["choices"][0]["logprobs"]["top_logprobs"] == [
        {piece: chosen_only["choices"][0]["logprobs"]["token_logprobs"][0]}
    ]
    default = await complete(client, prompt=prompt)  # max_tokens omitted: one greedy token
    assert default["choices"][0]["text"] == piece and default["choices"][0]["logprobs"] is None
    assert default["usage"]["completion_tokens"] == 1


def lm_eval_parse_logprobs(outputs: dict[str, Any], ctxlens: list[int]) -> list[tuple[float, bool]]:
    """lm-evaluation-harness ``LocalCompletionsAPI.parse_logprobs``, as it reads a response."""
    res = []
    for choice, ctxlen in zip(
        sorted(outputs["choices"], key=lambda c: c["index"]), ctxlens, strict=True
    ):
        assert ctxlen > 0
        logprobs = sum(choice["logprobs"]["token_logprobs"][ctxlen:-1])
        tokens_logprobs = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        top_logprobs = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        is_greedy = True
        for tok, top in zip(tokens_logprobs, top_logprobs, strict=True):
            if tok != max(top.values()):
                is_greedy = False
                break
        res.append((logprobs, is_greedy))
    return res


async def test_lm_eval_loglikelihood(
    client: httpx.AsyncClient,
    tokenizer: Any,
    reference_token_logprobs: RefRows,
    reference_logprobs: RefRows,
) -> None:
    context = encode(tokenizer, "the quick brown fox jumps over")
    g1, alt1, _ = greedy(reference_logprobs, context)
    g2, alt2, _ = greedy(reference_logprobs, [*context, g1])
    continuations = [[g1], [g1, g2], [alt1], [g1, alt2]]
    expected_greedy = [True, True, False, False]
    prompts = [context + cont for cont in continuations]
    payload = {  # what local-completions sends for loglikelihood requests
        "model": "default",
        "prompt": prompts,
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    body = await complete(client, **payload)
    for choice, prompt in zip(body["choices"], prompts, strict=True):
        assert len(choice["logprobs"]["tokens"]) == len(prompt) + 1
    parsed = lm_eval_parse_logprobs(body, [len(context)] * len(prompts))
    for (total, is_greedy), prompt, cont, want in zip(
        parsed, prompts, continuations, expected_greedy, strict=True
    ):
        reference = reference_token_logprobs(prompt)[len(context) - 1 :]
        assert len(reference) == len(cont)
        # Four prompts batched vs a lone float64 forward: the contract's tolerance.
        assert total == pytest.approx(
            float(reference.sum()), rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
        assert is_greedy is want


async def test_prompt_shapes(client: httpx.AsyncClient, tokenizer: Any) -> None:
    first, second = "hello world, the model scores", "Grüße aus München 🍺"
    ids1, ids2 = encode(tokenizer, first), encode(tokenizer, second)
    options = {"echo": True, "logprobs": 1, "max_tokens": 0}

    def lists(body: dict[str, Any]) -> list[tuple[list[str], list[float | None]]]:
        return [(c["logprobs"]["tokens"], c["logprobs"]["token_logprobs"]) for c in body["choices"]]

    as_text = lists(await complete(client, prompt=first, **options))
    as_ids = lists(await complete(client, prompt=ids1, **options))
    as_texts = await complete(client, prompt=[second, first], **options)
    as_id_lists = await complete(client, prompt=[ids2, ids1], **options)
    mixed = await complete(client, prompt=[ids2, first], **options)
    assert as_text[0][0] == as_ids[0][0] and as_text[0][0][0] != ""
    assert as_text[0][1][0] is None and as_ids[0][1][0] is None
    # Separate requests and batch compositions: the contract's tolerance, not one CPU's rounding.
    assert as_ids[0][1][1:] == pytest.approx(
        as_text[0][1][1:], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    for body in (as_texts, as_id_lists, mixed):
        assert [c["index"] for c in body["choices"]] == [0, 1]
        assert [c["text"] for c in body["choices"]] == [second, first]  # prompt order
        (tokens2, _), (tokens1, lps1) = lists(body)
        assert tokens1 == as_text[0][0] and "".join(tokens2) == second
        assert lps1[1:] == pytest.approx(
            as_text[0][1][1:], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
    assert lists(as_id_lists)[0][1][1:] == pytest.approx(
        lists(as_texts)[0][1][1:], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    assert as_id_lists["usage"]["prompt_tokens"] == len(ids1) + len(ids2)


async def test_one_token_prompt(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    (token,) = encode(tokenizer, "hello")
    best, _, dist = greedy(reference_logprobs, [token])
    piece = next_piece(tokenizer, [token], best)
    for prompt in ("hello", [token], [[token]]):
        body = await complete(client, prompt=prompt, echo=True, logprobs=1, max_tokens=1)
        (choice,) = body["choices"]
        lp = check_logprobs_object(choice, 1)
        assert lp["tokens"] == ["hello", piece] and choice["text"] == "hello" + shown_text(piece)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert lp["token_logprobs"][1] == pytest.approx(dist[best], abs=1e-4)
        assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        scored = await complete(client, prompt=prompt, echo=True, logprobs=1, max_tokens=0)
        assert scored["choices"][0]["logprobs"]["tokens"] == ["hello"]
        assert scored["choices"][0]["logprobs"]["token_logprobs"] == [None]
        assert scored["choices"][0]["logprobs"]["top_logprobs"] == [None]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the ByteLevel alphabet of the tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def unusual_splits(tokenizer: Any) -> list[list[int]]:
    """Token ids that do not re-tokenize to themselves: words cut into characters, and
    words cut into single UTF-8 bytes (splitting multi-byte characters across tokens)."""
    byte_char = bytes_to_unicode()
    cases = []
    for word in ("the quick", "hello world", "München", "Grüße 🍺", "Привет"):
        by_char = [i for ch in word for i in encode(tokenizer, ch)]
        by_byte = tokenizer.convert_tokens_to_ids([byte_char[b] for b in word.encode()])
        cases.extend([by_char, by_byte])
    unk = tokenizer.unk_token_id
    return [
        ids for ids in cases if unk not in ids and encode(tokenizer, tokenizer.decode(ids)) != ids
    ]


async def test_ids_that_do_not_retokenize(
    client: httpx.AsyncClient, tokenizer: Any, reference_token_logprobs: RefRows
) -> None:
    a, b = encode(tokenizer, "a"), encode(tokenizer, "b")
    if encode(tokenizer, tokenizer.decode(a + b)) == a + b:
        cases = unusual_splits(tokenizer)  # "a" + "b" merges back: cut other words instead
    else:
        cases = [a + b, *unusual_splits(tokenizer)]
    if not cases:
        pytest.skip("the tiny tokenizer re-tokenizes every constructed split identically")
    body = await complete(client, prompt=cases, echo=True, logprobs=1, max_tokens=1)
    for ids, choice in zip(cases, body["choices"], strict=True):
        text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        lp = check_logprobs_object(choice, 1)
        assert len(lp["tokens"]) == len(ids) + 1
        assert "".join(lp["tokens"][:-1]) == text == tokenizer.decode(ids)
        assert choice["text"].startswith(text)
        expected = reference_token_logprobs(ids)
        # Batched with the other cases vs a lone float64 forward: the contract's tolerance.
        assert lp["token_logprobs"][1:-1] == pytest.approx(
            expected.tolist(), rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )


async def test_concurrent_requests_share_batches_correctly(client: httpx.AsyncClient) -> None:
    """Completions (with a next-token row) and score/text batched together give what each
    gives alone."""
    requests = [
        {"prompt": TEXTS[:3], "echo": True, "logprobs": 2, "max_tokens": 1},
        {"prompt": TEXTS[2:], "echo": True, "logprobs": 1, "max_tokens": 0},
        {"prompt": "hello", "echo": True, "logprobs": 3, "max_tokens": 1},
    ]
    alone = [await complete(client, **r) for r in requests]
    alone_scores = await score_tokens(client, TEXTS[1], 0)
    together: list[Any] = await asyncio.gather(
        *(complete(client, **r) for r in requests * 3), score_tokens(client, TEXTS[1], 0)
    )
    *bodies, scores = together
    # Batched vs alone: the contract's 1e-4 relative (matmul rounding follows the batch shape).
    assert [t["logprob"] for t in scores[1:]] == pytest.approx(
        [t["logprob"] for t in alone_scores[1:]], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )
    for body, single in zip(bodies, alone * 3, strict=True):
        for choice, expected in zip(body["choices"], single["choices"], strict=True):
            assert choice["text"] == expected["text"]
            assert choice["logprobs"]["tokens"] == expected["logprobs"]["tokens"]
            got, want = choice["logprobs"]["token_logprobs"], expected["logprobs"]["token_logprobs"]
            assert got[0] is None and got[1:] == pytest.approx(
                want[1:], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
            )


async def test_prompt_ending_inside_a_character(client: httpx.AsyncClient, tokenizer: Any) -> None:
    """Token ids cut inside a UTF-8 character: the echo shows it as U+FFFD, and a generated
    token completing it adds only its own text (not the prompt's tail again)."""
    byte_char = bytes_to_unicode()
    whole = encode(tokenizer, "hello wor") + tokenizer.convert_tokens_to_ids(
        [byte_char[b] for b in "ü".encode()]
    )
    prompt, completing = whole[:-1], whole[-1]
    assert tokenizer.decode(prompt).endswith("\ufffd") and tokenizer.decode(whole) == "hello worü"
    assert next_piece(tokenizer, prompt, completing) == "ü"
    assert next_piece(tokenizer, whole, encode(tokenizer, "x")[0]) == "x"

    body = await complete(client, prompt=prompt, echo=True, logprobs=1, max_tokens=1)
    lp = check_logprobs_object(body["choices"][0], 1)
    assert "".join(lp["tokens"][:-1]) == tokenizer.decode(prompt) == "hello wor\ufffd"
    assert len(lp["tokens"]) == len(prompt) + 1


async def test_stop_string_in_the_generated_token_ends_the_text(
    client: httpx.AsyncClient,
) -> None:
    prompt = "The quick brown fox"
    plain = (await complete(client, prompt=prompt, max_tokens=1, temperature=0))["choices"][0]
    generated = plain["text"]
    assert plain["finish_reason"] in ("length", "stop")
    if not generated.strip():
        pytest.skip("the tiny model generated only whitespace")
    stop = generated.strip()[:1]
    body = await complete(client, prompt=prompt, max_tokens=1, temperature=0, stop=[stop])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == generated[: generated.index(stop)]
    # A stop string that does not occur changes nothing.
    other = await complete(client, prompt=prompt, max_tokens=1, temperature=0, stop="\u2603")
    assert other["choices"][0]["text"] == generated


async def test_vllm_stop_extensions(client: httpx.AsyncClient) -> None:
    """stop_token_ids ends with "stop" and keeps the token's text; include_stop_str_in_output
    keeps the stop string; a stop token that is not generated changes nothing."""
    prompt = "The quick brown fox"
    plain = await complete(client, prompt=prompt, max_tokens=1, return_token_ids=True)
    (token,) = plain["choices"][0]["token_ids"]
    generated, plain_reason = plain["choices"][0]["text"], plain["choices"][0]["finish_reason"]
    stopped = await complete(client, prompt=prompt, max_tokens=1, stop_token_ids=[token])
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["choices"][0]["text"] == generated
    other = await complete(client, prompt=prompt, max_tokens=1, stop_token_ids=[token + 1])
    assert other["choices"][0]["finish_reason"] == plain_reason
    if not generated.strip():
        pytest.skip("the tiny model generated only whitespace")
    stop = generated.strip()[:1]
    kept = await complete(
        client, prompt=prompt, max_tokens=1, stop=stop, include_stop_str_in_output=True
    )
    assert kept["choices"][0]["finish_reason"] == "stop"
    assert kept["choices"][0]["text"] == generated[: generated.index(stop) + len(stop)]


async def test_stops_with_echo_cut_only_generated_text_whatever_their_order(
    client: httpx.AsyncClient,
) -> None:
    """Regression: a later stop was searched from a start recomputed on already-cut text, so
    a stop matching the end of the echoed prompt truncated the prompt, depending on order."""
    # Several prompts: the tiny model's greedy token may add no text (one that ends inside
    # a character) or repeat the prompt's last character.
    prompts = ("The quick brown fox", "Once upon a time", "The weather today", "the", "abc")
    for prompt in prompts:
        plain = await complete(client, prompt=prompt, max_tokens=1, temperature=0)
        generated = plain["choices"][0]["text"]
        # A stop in the generated piece, and one matching the prompt's last character.
        in_generated, in_prompt = generated.strip()[:1], prompt[-1:]
        if in_generated and in_prompt not in generated:
            break
    else:
        pytest.skip("the tiny model generated text this test cannot use")
    texts = []
    for stops in ([in_generated, in_prompt], [in_prompt, in_generated]):
        body = await complete(
            client, prompt=prompt, echo=True, max_tokens=1, temperature=0, stop=stops
        )
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop"
        texts.append(choice["text"])
    expected = prompt + generated[: generated.index(in_generated)]
    assert texts == [expected, expected]
