"""The CUDA paths, on a CUDA GPU only (skipped elsewhere, and so in CI, which has none).

- torch's flash-attention varlen kernel over a ragged stream equals per-window attention
  (half precision: bf16 tolerance, ||out - ref|| / ||ref|| below 1e-2).
- float32 on CUDA: ragged = padded = alone, and = the float64 reference, at the contract's
  tolerance. TF32 matmuls would miss it (~1e-3 relative): it catches them being switched on.
- bf16 on CUDA (the GPU default): the varlen stream and padded batches score alike, within
  what bf16 moves a tiny model's mean NLL.
- A token tree (shared prefix) on CUDA scores like its branches one by one.
- The REST door over a CUDA engine answers what the CPU engine answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ragged_cases import attend, block_causal_reference, context_tree
from tiny_engines import asgi_client, make_engine
from tolerances import BATCH_INVARIANCE_REL, batch_invariance_atol, ppl_rel

from service.backends import ragged
from service.backends.base import BatchLayout, ForwardItem
from service.backends.hf import HFBackend
from service.backends.ragged import RaggedBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = [
    "a",
    "The quick brown fox jumps over the lazy dog. Grüße aus München! " * 3,
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567",
    "the model scores every token hello world assistant user system text language",
]

BF16_MEAN_NLL_REL = 0.03
"""bf16 moves a mean NLL by up to a few percent (README, "Precision"); between two bf16
layouts the difference is rounding order only, well inside this."""


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


def test_the_varlen_kernel_equals_per_window_attention() -> None:
    if ragged._VARLEN is None:
        pytest.skip(f"torch {torch.__version__} has no varlen_attn this backend can drive")
    torch.manual_seed(0)
    lengths = [5, 1, 37, 2, 130]
    total, cuda = sum(lengths), torch.device("cuda")
    q = torch.randn(1, 8, total, 64, device=cuda, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, total, 64, device=cuda, dtype=torch.bfloat16) for _ in range(2))
    batch = RaggedBatch.of([[0] * n for n in lengths], cuda)
    assert ragged._use_varlen(q, None, 64**-0.5)
    out, _ = attend(batch, q, k, v)
    want = block_causal_reference(*(t.float().cpu() for t in (q, k, v)), lengths).to(cuda)
    assert out.shape == want.shape and not out.isnan().any()
    assert _relative_error(out, want) < 1e-2


@pytest.fixture(scope="module")
def cuda_backends(tiny_model_dir: Path) -> dict[str, HFBackend]:
    return {
        f"{dtype}/{layout}": HFBackend(tiny_model_dir, dtype=dtype, device="cuda", attention=layout)
        for dtype in ("float32", "bfloat16")
        for layout in ("ragged", "padded")
    }


def _items(tokenizer: Any) -> list[ForwardItem]:
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    return [ForwardItem(tuple(i), 1, top_k=3, with_ranks=True) for i in ids]


def test_float32_layouts_on_cuda_equal_each_other_alone_and_float64(
    cuda_backends: dict[str, HFBackend],
    tokenizer: Any,
    reference_token_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    ragged_backend, padded = cuda_backends["float32/ragged"], cuda_backends["float32/padded"]
    assert ragged_backend.layout is BatchLayout.RAGGED
    assert not torch.backends.cuda.cudnn_sdp_enabled()  # loading a CUDA backend left it out
    assert ragged_backend.info.device.startswith("cuda")
    items = _items(tokenizer)
    for item, r, p in zip(items, ragged_backend.forward(items), padded.forward(items), strict=True):
        alone = ragged_backend.forward([item])[0]
        reference = reference_token_logprobs(list(item.input_ids))
        tol = batch_invariance_atol(reference)
        for got in (r, p, alone):
            np.testing.assert_allclose(got.logprobs, reference, rtol=BATCH_INVARIANCE_REL, atol=tol)
        np.testing.assert_allclose(r.top_logprobs, p.top_logprobs, atol=tol)
        assert np.array_equal(r.top_ids[:, 0], p.top_ids[:, 0])
        assert np.array_equal(r.ranks, p.ranks)


def test_float32_streams_on_cuda_take_padded_groups(
    cuda_backends: dict[str, HFBackend], tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No varlen kernel takes float32: the windows attend in a few padded groups, one SDPA
    call each, not one call per window (the scores are checked above)."""
    calls: list[int] = []
    real = ragged.grouped_attention
    monkeypatch.setattr(
        ragged, "grouped_attention", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k)
    )
    cuda_backends["float32/ragged"].forward(_items(tokenizer))
    layers = cuda_backends["float32/ragged"].model.config.num_hidden_layers
    assert len(calls) == layers and max(calls) < len(TEXTS)


def test_bf16_varlen_stream_scores_like_padded_batches(
    cuda_backends: dict[str, HFBackend],
    tokenizer: Any,
    reference_token_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    items = _items(tokenizer)
    streamed = cuda_backends["bfloat16/ragged"].forward(items)
    padded = cuda_backends["bfloat16/padded"].forward(items)
    for item, s, p in zip(items, streamed, padded, strict=True):
        if len(item.input_ids) < 2:
            continue  # nothing scored
        exact = float(np.mean(reference_token_logprobs(list(item.input_ids))))
        for got in (s, p):
            assert got.logprobs.dtype == np.float32
            moved = abs(float(np.mean(got.logprobs)) / exact - 1)
            assert moved < BF16_MEAN_NLL_REL, (len(item.input_ids), moved)


def test_bf16_mixed_runs_the_varlen_kernel(
    tiny_model_dir: Path,
    tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
    reference_token_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    """Under autocast the queries leave the rotary embedding in float32; they are cast to
    bf16 as SDPA's inputs would be, so the stream still takes one varlen kernel."""
    if ragged._VARLEN is None:
        pytest.skip(f"torch {torch.__version__} has no varlen_attn this backend can drive")
    used: list[bool] = []
    real = ragged._varlen
    monkeypatch.setattr(ragged, "_varlen", lambda *args: used.append(True) or real(*args))
    mixed = HFBackend(tiny_model_dir, dtype="bf16-mixed", device="cuda", attention="ragged")
    used.clear()  # the load-time probe ran it too
    items = [item for item in _items(tokenizer) if len(item.input_ids) > 1]
    for item, got in zip(items, mixed.forward(items), strict=True):
        exact = float(np.mean(reference_token_logprobs(list(item.input_ids))))
        assert abs(float(np.mean(got.logprobs)) / exact - 1) < BF16_MEAN_NLL_REL
    assert used


def test_a_token_tree_on_cuda_scores_like_its_branches(
    cuda_backends: dict[str, HFBackend], tokenizer: Any
) -> None:
    tree, linear = context_tree(tokenizer)
    got = cuda_backends["float32/ragged"].forward([tree, *linear])
    want = np.concatenate([r.logprobs for r in got[1:]])
    np.testing.assert_allclose(
        got[0].logprobs, want, rtol=BATCH_INVARIANCE_REL, atol=batch_invariance_atol(want)
    )


async def test_rest_over_a_cuda_engine_answers_as_the_cpu_engine(tiny_model_dir: Path) -> None:
    body = {"texts": TEXTS, "return_tokens": True}
    answers = []
    for device in ("cuda", "cpu"):
        engine = make_engine(tiny_model_dir, device=device)
        try:
            async with asgi_client(engine) as client:
                response = await client.post("/v1/score/text", json=body)
                assert response.status_code == 200, response.text
                answers.append(response.json()["results"])
        finally:
            await engine.close()
    for on_cuda, on_cpu in zip(*answers, strict=True):
        assert on_cuda["num_scored_tokens"] == on_cpu["num_scored_tokens"]
        if on_cpu["ppl"] is None:  # nothing scored
            assert on_cuda["ppl"] is None
            continue
        assert on_cuda["ppl"] == pytest.approx(on_cpu["ppl"], rel=ppl_rel(on_cpu["ppl"]))
        got = np.array([t["logprob"] or 0.0 for t in on_cuda["tokens"]])
        want = np.array([t["logprob"] or 0.0 for t in on_cpu["tokens"]])
        np.testing.assert_allclose(
            got, want, rtol=BATCH_INVARIANCE_REL, atol=batch_invariance_atol(want)
        )
