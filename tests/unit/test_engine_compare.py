"""Two tiny models compared: KL divergence, top-1 agreement, binoculars and the
bits-per-byte ratio against float64 references; tokenizers that differ get a 422."""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import torch
from tiny_engines import asgi_client, make_engine
from tolerances import BATCH_INVARIANCE_REL

from service import compare, metrics
from service.backends import dynamic_batcher
from service.backends.hf import HFBackend
from service.engine import Engine
from service.errors import InvalidRequest, NotFound, TooLarge
from service.schemas import CompareRequest, TextScoreRequest

ASYNC = pytest.mark.asyncio(loop_scope="session")
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Привет мир 😀 hello",
    "a",
    "日本 \U0001d538",
]


def _model_copy(source: Path, target: Path, seed: int, vocab: int | None = None) -> Path:
    """Another random model of the same shape (same tokenizer files, other weights)."""
    from transformers import AutoConfig, LlamaForCausalLM

    shutil.copytree(source, target)
    config = AutoConfig.from_pretrained(source)
    if vocab is not None:
        config.vocab_size = vocab
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_copy(tiny_model_dir, tmp_path_factory.mktemp("b") / "m", seed=7)


@pytest.fixture(scope="module")
def other_tokenizer_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same weights' shape, but a tokenizer with an extra token: another tokenizer."""
    from transformers import AutoTokenizer

    target = _model_copy(tiny_model_dir, tmp_path_factory.mktemp("c") / "m", seed=9)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.add_tokens(["<extra>"])
    tokenizer.save_pretrained(target)
    return target


@pytest_asyncio.fixture(loop_scope="session")
async def engine(
    tiny_model_dir: Path, other_model_dir: Path, other_tokenizer_dir: Path
) -> AsyncIterator[Engine]:
    engine = make_engine(tiny_model_dir, max_compare_chars=500)
    for name, path in (("b", other_model_dir), ("c", other_tokenizer_dir)):
        backend = HFBackend(path, dtype="float32", device="cpu")
        engine.registry.add(name, "sha256:" + name, dynamic_batcher(backend, name, engine.settings))
    yield engine
    await engine.close()


@torch.inference_mode()
def rows64(path: Path, ids: list[int]) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    logits = model(torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits, dim=-1).numpy()


@ASYNC
async def test_token_level_matches_float64(
    engine: Engine, tokenizer: Any, tiny_model_dir: Path, other_model_dir: Path
) -> None:
    request = CompareRequest(
        models=["default", "b"], texts=TEXTS, token_level=True, return_tokens=True
    )
    response = (await engine.compare_models(request)).response
    assert response.same_tokenizer and response.models == ["default", "b"]
    for text, result in zip(TEXTS, response.results, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert [s.model for s in result.scores] == ["default", "b"]
        if len(ids) < 2:
            assert result.kl_divergence is None and result.bits_per_byte_ratio is None
            continue
        ra, rb = rows64(tiny_model_dir, ids), rows64(other_model_dir, ids)
        pa = np.exp(ra)
        kl = (pa * (ra - rb)).sum(-1)
        nll_b = -rb[np.arange(len(ids) - 1), ids[1:]]
        cross = -(pa * rb).sum(-1)
        rel = BATCH_INVARIANCE_REL
        assert result.kl_divergence == pytest.approx(kl.mean(), rel=rel, abs=1e-5)
        # float32 may pick the other of two near-tied best tokens (float64 gap <= 1e-4).
        near_tie = [np.diff(np.sort(r, axis=-1)[:, -2:], axis=-1)[:, 0] <= 1e-4 for r in (ra, rb)]
        slack = float(np.mean(near_tie[0] | near_tie[1]))
        exact = float((ra.argmax(-1) == rb.argmax(-1)).mean())
        assert result.top1_agreement is not None
        assert abs(result.top1_agreement - exact) <= slack + 1e-9
        assert result.binoculars == pytest.approx(nll_b.mean() / cross.mean(), rel=rel)
        nll_a = -ra[np.arange(len(ids) - 1), ids[1:]]
        assert result.bits_per_byte_ratio == pytest.approx(nll_a.sum() / nll_b.sum(), rel=rel)
        assert result.scores[1].sum_logprob == pytest.approx(-nll_b.sum(), rel=rel)
        assert result.tokens is not None and result.tokens[0].kl is None
        got = [t.kl for t in result.tokens[1:]]
        np.testing.assert_allclose(got, kl, rtol=1e-3, atol=1e-5)
        # The tokens' texts tile the text, as score/text's do: a character split across
        # byte tokens is in the token that completes it, never a replacement character.
        assert "".join(t.text for t in result.tokens) == text


@ASYNC
async def test_a_model_against_itself_has_zero_kl(engine: Engine, tiny_model_dir: Path) -> None:
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    engine.registry.add("twin", "sha256:test", dynamic_batcher(backend, "twin", engine.settings))
    request = CompareRequest(models=["default", "twin"], texts=TEXTS[:2], token_level=True)
    for result in (await engine.compare_models(request)).response.results:
        assert result.kl_divergence is not None and abs(result.kl_divergence) < 1e-6
        assert result.top1_agreement == 1.0
        assert result.bits_per_byte_ratio == pytest.approx(1.0, rel=BATCH_INVARIANCE_REL)


@ASYNC
async def test_different_tokenizers_compare_by_bytes_only(engine: Engine) -> None:
    plain = CompareRequest(models=["default", "c"], texts=TEXTS[:2])
    response = (await engine.compare_models(plain)).response
    assert not response.same_tokenizer
    for result in response.results:
        assert result.bits_per_byte_ratio is not None and result.kl_divergence is None
    with pytest.raises(InvalidRequest) as caught:
        await engine.compare_models(
            CompareRequest(models=["default", "c"], texts=TEXTS, token_level=True)
        )
    assert caught.value.param == "token_level"


@ASYNC
async def test_different_tokenizers_score_every_byte(engine: Engine) -> None:
    """With different tokenizers the first tokens would differ in length, so each model
    scores its first token too (given its BOS): both sides cover every byte, and each
    equals /v1/score/text with prepend_bos."""
    compared = await engine.compare_models(CompareRequest(models=["default", "c"], texts=TEXTS))
    sides = []
    for name in ("default", "c"):
        request = TextScoreRequest(model=name, texts=TEXTS, prepend_bos=True)
        sides.append((await engine.score_text(request)).response.results)
    for i, result in enumerate(compared.response.results):
        for scores, alone in zip(result.scores, (side[i] for side in sides), strict=True):
            assert scores.num_scored_tokens == scores.num_tokens == alone.num_tokens
            assert scores.sum_logprob == pytest.approx(alone.sum_logprob, rel=BATCH_INVARIANCE_REL)
            assert scores.bits_per_byte == pytest.approx(
                alone.bits_per_byte, rel=BATCH_INVARIANCE_REL
            )
        a, b = (s.bits_per_byte for s in result.scores)
        assert a is not None and b is not None
        assert result.bits_per_byte_ratio == pytest.approx(a / b, rel=1e-12)


@ASYNC
async def test_bad_comparisons(engine: Engine) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"models": ["default", "default"]}, InvalidRequest, "models"),
        ({"models": ["default", "nope"]}, NotFound, "models[1]"),
        (
            {"models": ["default", "b"], "token_level": True, "texts": ["x" * 501]},
            TooLarge,
            "texts",
        ),
    ]
    for fields, error, param in cases:
        with pytest.raises(error) as caught:
            await engine.compare_models(CompareRequest.model_validate({"texts": ["hi"], **fields}))
        assert caught.value.param == param  # type: ignore[attr-defined]


@ASYNC
async def test_token_level_limits_tokens_as_well_as_characters(
    engine_factory: Any, other_model_dir: Path
) -> None:
    """A character may be four byte-level tokens (CJK Extension B): memory grows with
    positions x vocabulary, so the limit counts tokens as well."""
    engine = engine_factory(max_compare_chars=20)
    backend = HFBackend(other_model_dir, dtype="float32", device="cpu")
    engine.registry.add("b", "sha256:b", dynamic_batcher(backend, "b", engine.settings))
    rare = "\U00020000\U00020001" * 5  # 10 characters, about 40 tokens
    request = CompareRequest(models=["default", "b"], texts=[rare], token_level=True)
    with pytest.raises(TooLarge, match="tokens") as caught:
        await engine.compare_models(request)
    assert caught.value.param == "texts"
    plain = CompareRequest(models=["default", "b"], texts=[rare])  # no distributions kept
    assert (await engine.compare_models(plain)).response.results[0].bits_per_byte_ratio


@ASYNC
async def test_rest(engine: Engine) -> None:
    async with asgi_client(engine) as http:
        ok = await http.post("/v1/score/compare", json={"models": ["default", "b"], "texts": TEXTS})
        assert ok.status_code == 200, ok.text
        assert "kl_divergence" not in ok.json()["results"][0]
        one = await http.post("/v1/score/compare", json={"models": ["default"], "texts": TEXTS})
        assert one.status_code == 422 and one.json()["error"]["param"] == "models"
        mixed = {"models": ["default", "c"], "texts": TEXTS, "token_level": True}
        refused = await http.post("/v1/score/compare", json=mixed)
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "token_level"


@ASYNC
async def test_grpc_equals_rest(engine: Engine) -> None:
    import grpc
    from google.protobuf import json_format

    from service.api.grpc_server import GrpcDoor
    from service.api.pb.lmscore.v1 import scoring_pb2 as pb
    from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc

    body = {"models": ["default", "b"], "texts": TEXTS[:2], "token_level": True}
    async with asgi_client(engine) as http:
        rest = (await http.post("/v1/score/compare", json={**body, "return_tokens": True})).json()
    door = GrpcDoor(engine)
    port = door.bind("127.0.0.1", 0)
    await door.start()
    await door.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ScorerStub(channel)
            request = pb.CompareModelsRequest(**body, return_tokens=True)
            reply = await stub.CompareModels(request, timeout=60)
            bad = pb.CompareModelsRequest(models=["default", "default"], texts=["x"])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CompareModels(bad, timeout=60)
    finally:
        await door.stop(0)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    assert got["models"] == rest["models"] and got["same_tokenizer"] is True
    for g, r in zip(got["results"], rest["results"], strict=True):
        for key in ("kl_divergence", "top1_agreement", "binoculars", "bits_per_byte_ratio"):
            assert g[key] == pytest.approx(r[key], rel=BATCH_INVARIANCE_REL, abs=1e-6)
        assert len(g["tokens"]) == len(r["tokens"])


@ASYNC
async def test_token_level_comparison_runs_off_the_event_loop(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It walked [positions, vocabulary] float64 arrays on the event loop, stalling every
    # other request meanwhile.
    threads: list[threading.Thread] = []
    real = compare.compare_positions

    def recording(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(compare, "compare_positions", recording)
    request = CompareRequest(models=["default", "b"], texts=TEXTS[:1], token_level=True)
    await engine.compare_models(request)
    assert threads and threading.main_thread() not in threads


@ASYNC
async def test_compare_adds_no_empty_ppl_series(engine: Engine) -> None:
    """The drift histogram's endpoint label is the one requests are counted under; an
    endpoint that observes no text PPL (compare) leaves no empty series behind."""
    request = CompareRequest(models=["default", "b"], texts=TEXTS[:2])
    await engine.compare_models(request)
    endpoints = {
        sample.labels["endpoint"]
        for family in metrics.REGISTRY.collect()
        if family.name == "lmscore_text_ppl"
        for sample in family.samples
    }
    assert not endpoints & {"compare", "score_compare"}
