"""Ragged batches: the attention maths, the layout choice, and scores equal to padded and
lone forwards of the same windows (float32, the contract's tolerance)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ragged_cases import attend, block_causal_reference, context_tree, random_stream
from tolerances import (
    BATCH_INVARIANCE_REL,
    assert_ranks_agree,
    assert_top_ids_agree,
    batch_invariance_atol,
)

from service.backends import ragged
from service.backends.base import BatchLayout, ForwardItem
from service.backends.hf import HFBackend
from service.backends.ragged import RaggedBatch, ragged_attention
from service.backends.varlen_kernel import VarlenKernel

TEXTS = [
    "a",  # two tokens at most: the shortest window a batch can hold
    "The quick brown fox jumps over the lazy dog. Grüße aus München! " * 3,
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567",
    "the model scores every token hello world assistant user system text language",
]


@pytest.mark.parametrize("window", [None, 3])
def test_attention_equals_a_block_diagonal_mask(window: int | None) -> None:
    lengths = [5, 1, 9, 2]
    total = sum(lengths)
    q, k, v = random_stream(lengths)  # grouped-query: 2 kv heads
    batch = RaggedBatch.of([[0] * n for n in lengths], torch.device("cpu"))
    module = torch.nn.Module()
    out, weights = attend(batch, q, k, v, module, sliding_window=window)
    assert weights is None and out.shape == (1, total, 4, 8)
    want = block_causal_reference(q, k, v, lengths, window)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("window", [2, 3, 6, 100])
def test_a_token_tree_under_a_sliding_window_attends_like_each_branch_alone(window: int) -> None:
    """Sliding-window models (Gemma 2/3, Mistral v0.1, gpt-oss) take token trees longer
    than their window: along a branch a key lies as far back as the depths say."""
    context = [-1, 0, 1, 2, 3]
    parents = [*context, 4, 5, 6, 4, 8, 9, 10]  # two branches after a five-token context
    branches = [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 8, 9, 10, 11]]
    q, k, v = random_stream([len(parents)])
    batch = RaggedBatch.of([[0] * len(parents)], torch.device("cpu"), [parents])
    out, _ = attend(batch, q, k, v, sliding_window=window)
    for path in branches:
        alone = block_causal_reference(
            q[:, :, path], k[:, :, path], v[:, :, path], [len(path)], window
        )
        torch.testing.assert_close(out[:, path], alone, rtol=0, atol=1e-12)


def test_the_varlen_kernel_gets_only_a_stream_with_window_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the varlen kernel applies (CUDA, half precision), a call without window
    boundaries (one plain sequence, or padded rows) takes per-window SDPA: the kernel
    needs ``cu_seq_lens``, and it would read only the first row of a padded batch. Run on
    CPU with the kernel stood in for."""
    calls: list[tuple[int, ...]] = []

    def fake_varlen(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(q.shape))
        return torch.zeros_like(q)

    monkeypatch.setattr(ragged, "_VARLEN", VarlenKernel(fake_varlen, True, True, True))
    monkeypatch.setattr(ragged, "_use_varlen", lambda *args: True)
    q = torch.randn(2, 4, 5, 8)
    kv = torch.randn(2, 2, 5, 8)
    out, _ = ragged_attention(torch.nn.Module(), q, kv, kv, None)
    want = F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, want.transpose(1, 2))
    assert calls == []
    batch = RaggedBatch.of([[0] * 3, [0] * 2], torch.device("cpu"))
    attend(batch, q[:1], kv[:1], kv[:1])
    assert calls == [(5, 4, 8)]


def _varlen_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, causal: bool, **sdpa: Any
) -> torch.Tensor:
    """What a varlen kernel computes: ``[total, heads, dim]`` in, each window alone."""
    parts = []
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1)[None] for t in (q, k, v))
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, **sdpa)[0])
    return torch.cat(parts, dim=1).transpose(0, 1)


def first_varlen_kernel(  # torch's first signature: is_causal, equal head counts only
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor,
    max_q: int,
    max_k: int,
    is_causal: bool = False,
    return_aux: Any = None,
) -> torch.Tensor:
    assert query.shape[1] == key.shape[1], "this kernel takes equal head counts only"
    return _varlen_reference(query, key, value, cu_seq_q, is_causal)


def scaled_varlen_kernel(  # torch 2.11: scale and window_size, equal head counts only
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor,
    max_q: int,
    max_k: int,
    *,
    return_aux: Any = None,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
) -> torch.Tensor:
    assert query.shape[1] == key.shape[1], "this kernel takes equal head counts only"
    return _varlen_reference(query, key, value, cu_seq_q, window_size == (-1, 0), scale=scale)


def later_varlen_kernel(  # later: scale, window_size (-1, 0) for causal, enable_gqa
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor | None,
    max_q: int,
    max_k: int,
    *,
    return_aux: Any = None,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    enable_gqa: bool = False,
) -> torch.Tensor:
    causal = window_size == (-1, 0)
    return _varlen_reference(
        query, key, value, cu_seq_q, causal, scale=scale, enable_gqa=enable_gqa
    )


@pytest.mark.parametrize("kernel", [first_varlen_kernel, scaled_varlen_kernel, later_varlen_kernel])
@pytest.mark.parametrize("scaling", [None, 8**-0.5, 0.3])
def test_both_varlen_kernel_signatures_compute_per_window_causal_attention(
    monkeypatch: pytest.MonkeyPatch, kernel: Callable[..., torch.Tensor], scaling: float | None
) -> None:
    """torch's varlen kernel changed its signature; each one is driven to the same
    attention as per-window SDPA. The first takes no scale: a model with an unusual one
    (0.3 here) takes per-window SDPA instead. Run on CPU with the kernels stood in for."""
    varlen = VarlenKernel.of(kernel)
    assert varlen is not None and varlen.takes_scale == (kernel is not first_varlen_kernel)
    assert varlen.takes_gqa == (kernel is later_varlen_kernel)
    monkeypatch.setattr(ragged, "_VARLEN", varlen)
    monkeypatch.setattr(ragged, "_flash", lambda query: True)
    used: list[bool] = []
    real = ragged._varlen
    monkeypatch.setattr(ragged, "_varlen", lambda *args: used.append(True) or real(*args))
    lengths = [5, 1, 9, 2]
    q, k, v = random_stream(lengths)
    batch = RaggedBatch.of([[0] * n for n in lengths], torch.device("cpu"))
    out, _ = attend(batch, q, k, v, scaling=scaling)
    assert used == ([] if scaling == 0.3 and not varlen.takes_scale else [True])
    want = block_causal_reference(q * (scaling or 8**-0.5) * 8**0.5, k, v, lengths, None)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_a_varlen_kernel_of_unknown_signature_is_not_used() -> None:
    assert VarlenKernel.of(lambda query, key, value: query) is None


def test_ragged_batch_layout() -> None:
    batch = RaggedBatch.of([(7, 8, 9), (5,), (1, 2)], torch.device("cpu"))
    assert batch.input_ids.tolist() == [[7, 8, 9, 5, 1, 2]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert batch.cu_seq_lens.tolist() == [0, 3, 4, 6]
    assert batch.cu_seq_lens.dtype == torch.int32
    assert (batch.starts, batch.lengths, batch.max_length) == ((0, 3, 4), (3, 1, 2), 3)


@pytest.fixture(scope="module")
def backends(tiny_model_dir: Path) -> dict[str, HFBackend]:
    return {
        layout: HFBackend(tiny_model_dir, dtype="float32", device="cpu", attention=layout)
        for layout in ("ragged", "padded")
    }


def test_auto_picks_ragged_for_llama(tiny_model_dir: Path) -> None:
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.layout is BatchLayout.RAGGED


def test_layouts_score_alike_and_like_one_at_a_time(
    backends: dict[str, HFBackend],
    tokenizer: Any,
    reference_token_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    """Windows of very different lengths in one batch: ragged = padded = alone (float32,
    1e-4 relative), and all equal the float64 reference."""
    assert backends["ragged"].layout is BatchLayout.RAGGED
    assert backends["padded"].layout is BatchLayout.PADDED
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    lengths = sorted(len(i) for i in ids)
    assert lengths[0] <= 2 and lengths[-1] >= 10 * lengths[0]
    items = [ForwardItem(tuple(i), 1, top_k=3, with_ranks=True) for i in ids]
    ragged_out = backends["ragged"].forward(items)
    padded_out = backends["padded"].forward(items)
    for item, r, p, token_ids in zip(items, ragged_out, padded_out, ids, strict=True):
        alone = backends["ragged"].forward([item])[0]
        reference = reference_token_logprobs(token_ids)
        tol = batch_invariance_atol(reference)
        for got in (r, alone):
            np.testing.assert_allclose(
                got.logprobs, p.logprobs, rtol=BATCH_INVARIANCE_REL, atol=tol
            )
            np.testing.assert_allclose(got.top_logprobs, p.top_logprobs, atol=tol)
        assert np.max(np.abs(r.logprobs - reference), initial=0.0) <= tol
        assert_top_ids_agree(r.top_ids, p.top_ids, p.top_logprobs, tol)


def test_next_token_and_partial_scoring_in_a_ragged_batch(backends: dict[str, HFBackend]) -> None:
    ragged_backend, padded_backend = backends["ragged"], backends["padded"]
    items = [
        ForwardItem(tuple(range(3, 40)), 30, top_k=2, next_token=True),
        ForwardItem((5, 6), 1, top_k=2, next_token=True),
        ForwardItem(tuple(range(10, 25)), 1),
    ]
    for got, want in zip(ragged_backend.forward(items), padded_backend.forward(items), strict=True):
        assert got.logprobs.shape == want.logprobs.shape
        tol = batch_invariance_atol(want.logprobs)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=tol)
        if want.next_top_ids is not None:
            assert got.next_top_ids is not None and got.next_top_logprobs is not None
            assert np.array_equal(got.next_top_ids, want.next_top_ids)
            np.testing.assert_allclose(got.next_top_logprobs, want.next_top_logprobs, atol=tol)


def _leaky_attention(module: Any, query: Any, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
    """Causal attention over the whole stream: windows see each other (the bug to catch)."""
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
    return out.transpose(1, 2), None


def test_a_model_that_leaks_takes_the_padded_path(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AttentionInterface

    original = ragged.register

    def register_leaky() -> str:
        name = original()
        AttentionInterface.register(name, _leaky_attention)
        return name

    monkeypatch.setattr(ragged, "register", register_leaky)
    try:
        with caplog.at_level(logging.WARNING, logger="service.backends.hf"):
            backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
        assert backend.layout is BatchLayout.PADDED
        assert "batches are padded" in caplog.text
        with pytest.raises(RuntimeError, match="--attention ragged"):
            HFBackend(tiny_model_dir, dtype="float32", device="cpu", attention="ragged")
    finally:
        original()  # put the real attention back for the other tests


def test_mixed_precision_runs_bf16_matmuls_on_float32_weights(
    tiny_model_dir: Path,
    backends: dict[str, HFBackend],
    tokenizer: Any,
) -> None:
    mixed = HFBackend(tiny_model_dir, dtype="bf16-mixed", device="cpu")
    assert mixed.info.dtype == "bf16-mixed"
    assert next(mixed.model.parameters()).dtype == torch.float32
    ids = tokenizer.encode(TEXTS[1], add_special_tokens=False)
    item = [ForwardItem(tuple(ids), 1)]
    got = mixed.forward(item)[0].logprobs
    exact = backends["padded"].forward(item)[0].logprobs
    assert got.dtype == np.float32
    assert not np.array_equal(got, exact)  # bf16 matmuls did run
    assert abs(got.sum() / exact.sum() - 1) < 0.05


def test_a_token_tree_scores_like_its_branches_one_by_one(
    backends: dict[str, HFBackend], tokenizer: Any
) -> None:
    """Context + three continuations in one tree window = each context + continuation alone."""
    tree, linear = context_tree(tokenizer, with_ranks=True)
    plain = ForwardItem(tuple(range(5, 30)), 1)
    backend = backends["ragged"]
    assert backend.info.token_trees and not backends["padded"].info.token_trees
    got = backend.forward([plain, tree, *linear])
    want = np.concatenate([r.logprobs for r in got[2:]])
    np.testing.assert_allclose(
        got[1].logprobs, want, rtol=BATCH_INVARIANCE_REL, atol=batch_invariance_atol(want)
    )
    assert_ranks_agree(got[1].ranks, np.concatenate([r.ranks for r in got[2:]]))
    alone = backend.forward([plain])[0].logprobs  # the tree did not disturb its neighbour
    np.testing.assert_allclose(got[0].logprobs, alone, atol=batch_invariance_atol(alone))
    with pytest.raises(ValueError, match="ragged"):
        backends["padded"].forward([tree])
