"""A tokenizer with more tokens than the model has embeddings (added tokens never
trained): a request holding such a token is refused with a 422 naming it, on every door
to the model, and never reaches a batch, where it would fail every request beside it."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fakes import FakeSelfBatchingBackend
from tiny_engines import asgi_client, make_engine

from service.backends import pass_through
from service.errors import InvalidRequest
from service.registry import ModelRegistry
from service.settings import Settings

ASYNC = pytest.mark.asyncio(loop_scope="session")
EXTRA = "<extra>"


@pytest.fixture(scope="module")
def added_token_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, whose tokenizer gained one token its embedding has no row for."""
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("added") / "m"
    shutil.copytree(tiny_model_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.add_tokens([EXTRA])
    tokenizer.save_pretrained(target)
    return target


@pytest_asyncio.fixture(loop_scope="session")
async def http(added_token_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = make_engine(added_token_dir, names=("default", "twin"), max_wait_ms=50)
    async with asgi_client(engine) as client:
        yield client
    await engine.close()


def refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and EXTRA in error["message"]


@ASYNC
async def test_a_text_with_the_token_is_refused_and_its_batch_neighbour_answered(
    http: httpx.AsyncClient,
) -> None:
    bad = {"texts": ["fine text", f"a {EXTRA} b"]}
    good = {"texts": ["the other request, batched with it"], "words": True}
    answers = await asyncio.gather(
        http.post("/v1/score/text", json=bad), http.post("/v1/score/text", json=good)
    )
    refused(answers[0], "texts[1]")
    assert answers[1].status_code == 200, answers[1].text  # words: a mask per logit


@ASYNC
async def test_every_door_refuses_it(http: httpx.AsyncClient, tokenizer_size: int) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": EXTRA}]
    refused(await http.post("/v1/score/chat", json={"conversations": [chat]}), "conversations[0]")
    body = {"context": "a", "continuations": [" b", f" {EXTRA}"]}
    refused(await http.post("/v1/score/continuations", json=body), "continuations[1]")
    body = {"models": ["default", "twin"], "texts": [EXTRA + " x"]}
    refused(await http.post("/v1/score/compare", json=body), "texts[0]")
    refused(await http.post("/v1/completions", json={"prompt": f"x {EXTRA}", "max_tokens": 0}),
            "prompt")  # fmt: skip
    ids = {"prompt": [1, 2, tokenizer_size], "max_tokens": 0}
    answer = await http.post("/v1/completions", json=ids)
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "prompt[2]"


@pytest.fixture
def tokenizer_size(added_token_dir: Path) -> int:
    """The id of the added token: the first the model has no embedding for."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(added_token_dir)) - 1


class GappedTokenizer:
    """Three tokens with ids 0, 1 and 7: ``len`` is 3, the highest id 7 (as in tokenizers
    derived from larger ones)."""

    def __len__(self) -> int:
        return 3

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, "b": 1, "c": 7}

    def decode(self, ids: list[int], **kwargs: object) -> str:
        return "".join(self.convert_ids_to_tokens(i) for i in ids)

    def convert_ids_to_tokens(self, token: int) -> str:
        return {0: "a", 1: "b", 7: "c"}.get(token, "")


@pytest.mark.parametrize(("rows", "refused"), [(8, False), (None, False), (5, True)])
def test_ids_are_checked_against_the_embedding_not_the_tokenizers_length(
    rows: int | None, refused: bool
) -> None:
    # len(tokenizer) counted 3, so the tokenizer's own id 7 ("c") was refused as outside.
    backend = FakeSelfBatchingBackend(GappedTokenizer())
    backend.info = dataclasses.replace(backend.info, vocab_size=rows)
    model = ModelRegistry(Settings()).add(
        "gapped", "sha256:x", pass_through(backend, "gapped", Settings())
    )
    assert model.vocab_limit == (8 if rows is None else min(8, rows))
    if refused:
        with pytest.raises(InvalidRequest, match="id 7") as info:
            model.check_vocabulary([[0, 1], [0, 7]], ["texts[0]", "texts[1]"])
        assert info.value.param == "texts[1]"
    else:
        model.check_vocabulary([[0, 1], [0, 7]], ["texts[0]", "texts[1]"])
