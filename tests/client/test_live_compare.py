"""``compare`` in Client, AsyncClient and GrpcClient against a real two-model server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import read_jsonl, run_cli, write_jsonl
from compare import assert_close
from server_process import RunningServer, start_server, stop_server
from tolerances import ppl_rel

from lmscore_client import AsyncClient, Client, CompareResponse, GrpcClient, InvalidRequestError

TEXTS = ["The capital of France is Paris.", "asdkj qwpoe zmxn ,,,, 1238 !!!"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The embedded model twice: batched ragged and padded (same weights, float32).
    models = ["--model", "a=default", "--model", "b=default?attention=padded"]
    log = tmp_path_factory.mktemp("compare") / "log"
    server = start_server([*models, "--dtype", "float32", "--max-context", "256"], log)
    yield server
    stop_server(server)


def test_compare_over_rest_grpc_and_async(two_models: RunningServer) -> None:
    body = {"models": ["a", "b"], "texts": TEXTS, "token_level": True, "return_tokens": True}
    direct = httpx.post(f"{two_models.url}/v1/score/compare", json=body, timeout=120).json()
    with Client(two_models.url, timeout=120) as client:
        rest = client.compare(["a", "b"], TEXTS, token_level=True, return_tokens=True)
        with pytest.raises(InvalidRequestError) as caught:
            client.compare(["a", "a"], TEXTS)
    assert caught.value.param == "models"
    assert_close(rest, CompareResponse.from_json(direct))
    with GrpcClient(two_models.grpc, timeout=120) as grpc_client:
        assert_close(
            grpc_client.compare(["a", "b"], TEXTS, token_level=True, return_tokens=True), rest
        )

    async def run() -> CompareResponse:
        async with AsyncClient(two_models.url, timeout=120) as a:
            return await a.compare(["a", "b"], TEXTS, token_level=True, return_tokens=True)

    assert_close(asyncio.run(run()), rest)
    assert rest.same_tokenizer
    for result in rest.results:
        # Same weights, two batch layouts: the distributions agree to float32 rounding.
        assert result.kl_divergence is not None and result.kl_divergence < 1e-6
        # One flip per text at most: two near-tied best tokens may swap under the other
        # layout's rounding (on some CPU), which the contract's tolerance allows.
        positions = len(result.tokens or []) - 1
        assert result.top1_agreement is not None and positions > 0
        assert result.top1_agreement >= 1.0 - 1.0 / positions
        assert result.bits_per_byte_ratio == pytest.approx(1.0, rel=1e-4)
        assert result.tokens is not None and result.tokens[0].kl is None


def test_score_file_compare_model(two_models: RunningServer, tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rows = [{"text": TEXTS[0]}, {"messages": chat}, {"text": TEXTS[1]}, {"text": ""}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ("--model", "a", "--compare-model", "b", "--rows-per-request", "4")
    done = run_cli("score-file", str(source), "-o", str(out), "--url", two_models.url, *args)
    assert done.returncode == 0, done.stderr
    back = read_jsonl(out)
    assert len(back) == 4  # every row; the empty text with null scores and the error
    assert back[3]["ppl"] is None and back[3]["compare_ppl"] is None
    assert back[3]["score_error"]["status"] == 422
    scored = back[:3]
    with Client(two_models.url, timeout=120) as client:
        direct = client.compare(["a", "b"], TEXTS).results
    texts = [r for r in scored if "text" in r]
    for row, result in zip(texts, direct, strict=True):
        assert math.isclose(
            row["compare_ppl"], result.scores[1].ppl or 0, rel_tol=ppl_rel(row["compare_ppl"])
        )
        assert math.isclose(
            row["bits_per_byte_ratio"], result.bits_per_byte_ratio or 0, rel_tol=1e-4
        )
        assert math.isclose(row["ppl"], result.scores[0].ppl or 0, rel_tol=ppl_rel(row["ppl"]))
    (chat_row,) = [r for r in scored if "messages" in r]
    assert chat_row["ppl"] is not None and chat_row["compare_ppl"] is None


def test_an_unnamed_model_on_a_server_without_default(
    two_models: RunningServer, tmp_path: Path
) -> None:
    """Two models, neither called ``default``: a request that names none is refused with
    a message saying so, and score-file stops on it rather than failing every row."""
    with Client(two_models.url, timeout=120) as client:
        with pytest.raises(InvalidRequestError) as caught:
            client.score_text(TEXTS)
        assert client.score_text(TEXTS, model="b").model == "b"
    assert caught.value.param == "model"
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    done = run_cli("score-file", str(source), "-o", str(tmp_path / "out"), "--url", two_models.url)
    assert done.returncode != 0
    assert "name one" in done.stderr
