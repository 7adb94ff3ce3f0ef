"""vLLM's extensions of /v1/completions: ``prompt_logprobs`` (checked against a float64
reference of the tiny model), ``return_token_ids``, ``return_tokens_as_token_ids``, and
``add_special_tokens`` with a tokenizer that adds a BOS (and one that also adds an EOS)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from tiny_engines import asgi_client, make_engine
from tolerances import batch_invariance_atol

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/v1/completions"
TEXT = "the quick brown fox jumps over a lazy dog."
BOS, EOS = "<|im_start|>", "<|im_end|>"
RefRows = Callable[[list[int]], np.ndarray]


async def complete(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(URL, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def clear_rank(row: np.ndarray, token: int) -> int | None:
    """1 + the tokens more likely than ``token``, or None where a float32 rounding could
    reorder it with another token."""
    others = np.delete(row, token)
    if np.min(np.abs(others - row[token])) < 1e-3:
        return None
    return int(np.sum(others > row[token])) + 1


async def test_prompt_logprobs_match_the_reference(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    ids = encode(tokenizer, TEXT)
    body = await complete(client, prompt=TEXT, max_tokens=0, prompt_logprobs=3)
    (choice,) = body["choices"]
    assert "logprobs" in choice and choice["logprobs"] is None  # no echo, no legacy lists
    entries = choice["prompt_logprobs"]
    assert len(entries) == len(ids) and entries[0] is None
    rows = reference_logprobs(ids)
    atol = batch_invariance_atol(rows)
    for p in range(1, len(ids)):
        row, entry = rows[p - 1], entries[p]
        keys = list(entry)
        assert keys[0] == str(ids[p])  # the prompt token first
        mine = entry[str(ids[p])]
        assert mine["logprob"] == pytest.approx(row[ids[p]], abs=atol)
        assert mine["decoded_token"] == tokenizer.decode([ids[p]])
        want_rank = clear_rank(row, ids[p])
        if want_rank is not None:
            assert mine["rank"] == want_rank
        top = [int(t) for t in np.argsort(row)[::-1][:3]]
        assert set(keys) == {str(ids[p]), *map(str, top)}
        for rank, token in enumerate(top, start=1):
            assert entry[str(token)]["logprob"] == pytest.approx(row[token], abs=atol)
            if token != ids[p]:
                assert entry[str(token)]["rank"] == rank


@pytest.mark.parametrize("text", ["Grüße aus München 🍺", "hello Ωμέγα 🦀"])
async def test_decoded_tokens_of_split_characters_are_whole(
    client: httpx.AsyncClient, text: str
) -> None:
    """A token ending inside a character decodes alone to U+FFFD; as in vLLM it shows "",
    and the token completing the character shows all the text since the last whole
    character. The prompt tokens' texts still concatenate to the prompt."""
    body = await complete(
        client, prompt=text, echo=True, logprobs=0, max_tokens=0, prompt_logprobs=5
    )
    (choice,) = body["choices"]
    entries = choice["prompt_logprobs"]
    shown = [next(iter(entry.values()))["decoded_token"] for entry in entries[1:]]
    first = choice["logprobs"]["tokens"][0]  # the prompts start with a whole character
    assert "" in shown and first + "".join(shown) == text
    for entry in entries[1:]:
        assert not any(value["decoded_token"].endswith("\ufffd") for value in entry.values())


async def test_prompt_logprobs_of_a_token_id_prompt_follow_its_ids(
    client: httpx.AsyncClient, tokenizer: Any, reference_logprobs: RefRows
) -> None:
    ids = [5, *encode(tokenizer, "hello world")]
    body = await complete(client, prompt=ids, max_tokens=0, prompt_logprobs=0, echo=True)
    entries = body["choices"][0]["prompt_logprobs"]
    rows = reference_logprobs(ids)
    assert entries[0] is None
    for p in range(1, len(ids)):
        assert list(entries[p]) == [str(ids[p])]  # k = 0: the prompt token alone
        got = entries[p][str(ids[p])]["logprob"]
        assert got == pytest.approx(rows[p - 1][ids[p]], abs=batch_invariance_atol(rows))


async def test_return_token_ids_and_token_id_names(
    client: httpx.AsyncClient, tokenizer: Any
) -> None:
    ids = encode(tokenizer, TEXT)
    body = await complete(
        client,
        prompt=TEXT,
        echo=True,
        logprobs=2,
        max_tokens=1,
        return_token_ids=True,
        return_tokens_as_token_ids=True,
    )
    (choice,) = body["choices"]
    assert choice["prompt_token_ids"] == ids
    (generated,) = choice["token_ids"]
    tokens = choice["logprobs"]["tokens"]
    assert tokens == [f"token_id:{t}" for t in [*ids, generated]]
    assert choice["text"].startswith(TEXT)  # the text itself is unchanged
    for top in choice["logprobs"]["top_logprobs"][1:]:
        assert all(key.startswith("token_id:") for key in top)
    plain = await complete(client, prompt=TEXT, echo=True, logprobs=2, max_tokens=1)
    assert plain["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(
        choice["logprobs"]["token_logprobs"], abs=1e-4
    )


@pytest.mark.parametrize("value", [-1, 21, 2.5])
async def test_prompt_logprobs_out_of_range_is_a_422(client: httpx.AsyncClient, value: Any) -> None:
    response = await client.post(URL, json={"prompt": TEXT, "prompt_logprobs": value})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "prompt_logprobs"


def _with_post_processor(source: Path, target: Path, template: str) -> Path:
    """A copy of the tiny model whose tokenizer adds special tokens (``template``, in the
    tokenizers library's TemplateProcessing notation)."""
    shutil.copytree(source, target)
    path = target / "tokenizer.json"
    spec = json.loads(path.read_text())
    ids = {BOS: 1, EOS: 2}
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [_piece(p) for p in template.split()],
        "pair": [_piece(p) for p in template.split()],
        "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in ids.items()},
    }
    path.write_text(json.dumps(spec))
    return target


def _piece(name: str) -> dict[str, Any]:
    if name == "$A":
        return {"Sequence": {"id": "A", "type_id": 0}}
    return {"SpecialToken": {"id": name, "type_id": 0}}


@pytest_asyncio.fixture(loop_scope="session", params=["bos", "bos+eos"])
async def adding_client(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    template = {"bos": f"{BOS} $A", "bos+eos": f"{BOS} $A {EOS}"}[request.param]
    model_dir = _with_post_processor(tiny_model_dir, tmp_path / "adds", template)
    engine = make_engine(model_dir)
    async with asgi_client(engine) as http:
        yield request.param, http
    await engine.close()


async def test_a_text_prompt_gets_the_tokens_its_tokenizer_adds(
    adding_client: tuple[str, httpx.AsyncClient], tokenizer: Any, reference_logprobs: RefRows
) -> None:
    kind, client = adding_client
    plain = encode(tokenizer, TEXT)
    full = [1, *plain, *([2] if kind == "bos+eos" else [])]
    body = await complete(
        client, prompt=TEXT, echo=True, logprobs=1, max_tokens=0, return_token_ids=True
    )
    (choice,) = body["choices"]
    assert choice["prompt_token_ids"] == full
    assert body["usage"]["prompt_tokens"] == len(full)
    assert choice["text"] == TEXT  # the added tokens hold no character of the prompt
    lists = choice["logprobs"]
    assert lists["tokens"][0] == BOS and lists["text_offset"][:2] == [0, 0]
    if kind == "bos+eos":
        assert lists["tokens"][-1] == EOS and lists["text_offset"][-1] == len(TEXT)
    assert lists["token_logprobs"][0] is None
    rows = reference_logprobs(full)
    want = rows[np.arange(len(full) - 1), full[1:]]
    got = np.array(lists["token_logprobs"][1:], dtype=np.float64)
    assert np.max(np.abs(got - want)) <= batch_invariance_atol(want)
    # The same ids given as a token-id prompt score the same.
    as_ids = await complete(client, prompt=full, echo=True, logprobs=1, max_tokens=0)
    assert as_ids["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(
        lists["token_logprobs"][1:], abs=batch_invariance_atol(want)
    )


async def test_add_special_tokens_false_scores_the_text_alone(
    adding_client: tuple[str, httpx.AsyncClient], tokenizer: Any, reference_logprobs: RefRows
) -> None:
    _, client = adding_client
    plain = encode(tokenizer, TEXT)
    body = await complete(
        client, prompt=TEXT, echo=True, logprobs=0, max_tokens=0, add_special_tokens=False
    )
    lists = body["choices"][0]["logprobs"]
    assert "".join(lists["tokens"]) == TEXT and len(lists["tokens"]) == len(plain)
    assert lists["token_logprobs"][0] is None
    rows = reference_logprobs(plain)
    want = rows[np.arange(len(plain) - 1), plain[1:]]
    got = np.array(lists["token_logprobs"][1:], dtype=np.float64)
    assert np.max(np.abs(got - want)) <= batch_invariance_atol(want)
