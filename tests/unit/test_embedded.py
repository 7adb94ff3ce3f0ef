"""The embedded engine: the REST door's answers, in process, with no socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL, ppl_rel

from service.embedded import EmbeddedEngine

TEXTS = ["The cat sat on the mat.", "Colourless green ideas sleep furiously", "a"]


@pytest.fixture(scope="module")
def embedded(tiny_model_dir: Path) -> Iterator[EmbeddedEngine]:
    with EmbeddedEngine.start(
        model=[f"default={tiny_model_dir}"], dtype="float32", device="cpu"
    ) as engine:
        yield engine


async def test_answers_equal_the_rest_doors(
    embedded: EmbeddedEngine, client: httpx.AsyncClient
) -> None:
    body = {"texts": TEXTS, "return_tokens": True, "top_k": 2}
    answer = await embedded.request("POST", "/v1/score/text", body)
    rest = await client.post("/v1/score/text", json=body)
    assert answer.status == rest.status_code == 200
    ours, theirs = answer.body, rest.json()
    assert [r["num_tokens"] for r in ours["results"]] == [
        r["num_tokens"] for r in theirs["results"]
    ]
    for a, b in zip(ours["results"], theirs["results"], strict=True):
        if b["ppl"] is None:
            assert a["ppl"] is None
        else:
            assert a["ppl"] == pytest.approx(b["ppl"], rel=ppl_rel(b["ppl"]))
        # The tokens asked for, with their alternatives: the same ids, the same logprobs.
        assert [t["id"] for t in a["tokens"]] == [t["id"] for t in b["tokens"]]
        for got, want in zip(a["tokens"][1:], b["tokens"][1:], strict=True):
            assert got["logprob"] == pytest.approx(
                want["logprob"], rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
            )
            assert len(got["top"]) == len(want["top"]) == 2
    models = await embedded.request("GET", "/v1/models")
    assert models.status == 200 and models.body["data"][0]["id"] == "default"


def test_errors_are_the_contracts_bodies_and_statuses(embedded: EmbeddedEngine) -> None:
    bad = embedded.request_blocking("POST", "/v1/score/text", {"texts": ["ok", 5]})
    assert bad.status == 422
    assert bad.body["error"]["param"] == "texts[1]"
    unknown = embedded.request_blocking("POST", "/v1/score/text", {"texts": ["x"], "model": "nope"})
    assert unknown.status == 404 and unknown.body["error"]["type"] == "not_found"
    no_route = embedded.request_blocking("POST", "/v1/nothing", {})
    assert no_route.status == 404


def test_chat_and_continuations_answer(embedded: EmbeddedEngine) -> None:
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chat = embedded.request_blocking("POST", "/v1/score/chat", {"conversations": [conversation]})
    assert chat.status == 200, chat.body
    assert chat.body["results"][0]["num_scored_tokens"] > 0
    body = {"context": "The cat", "continuations": [" sat", " ran"]}
    answer = embedded.request_blocking("POST", "/v1/score/continuations", body)
    assert answer.status == 200 and len(answer.body["results"]) == 2
