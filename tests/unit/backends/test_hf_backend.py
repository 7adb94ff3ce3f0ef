"""HFBackend.forward against a float64 reference of the same tiny model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from tolerances import (
    BATCH_INVARIANCE_ABS,
    BATCH_INVARIANCE_REL,
    assert_ranks_agree,
    assert_top_ids_agree,
    batch_invariance_atol,
)

from service.backends import hf, precision
from service.backends.base import ForwardItem
from service.backends.hf import HFBackend, keep_attention_softcap
from service.backends.precision import pick_device, pick_dtype

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Grüße aus München!",
    "Привет мир, как дела? 😀 hello world",
    "Ωμέγα ñandú 😎 ℝ² short",
    "日本語 🚀 123 4567",
]
TIE_EPS = 1e-5  # float64 logprobs this close are treated as tied when checking ranks


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> HFBackend:
    return HFBackend(tiny_model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def token_ids(tokenizer: Any) -> list[list[int]]:
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    assert len({len(i) for i in ids}) == len(ids), "the texts should differ in length"
    return ids


def _check_against_reference(
    result: Any, ids: list[int], score_from: int, rows: np.ndarray
) -> None:
    targets = np.array(ids[score_from:])
    ref_rows = rows[score_from - 1 :]
    ref = ref_rows[np.arange(len(targets)), targets]
    assert result.logprobs.dtype == np.float32
    assert result.logprobs.shape == (len(targets),)
    assert np.max(np.abs(result.logprobs - ref)) <= 1e-4
    # Rank: 1 + entries strictly above the target, up to float64 near-ties.
    above_surely = (ref_rows > ref[:, None] + TIE_EPS).sum(axis=1) + 1
    above_maybe = (ref_rows > ref[:, None] - TIE_EPS).sum(axis=1)  # excludes the target itself
    assert np.all(result.ranks >= above_surely)
    assert np.all(result.ranks <= np.maximum(above_maybe, 1))
    k = result.top_ids.shape[1]
    if k:
        ref_top = -np.sort(-ref_rows, axis=1)[:, :k]
        assert np.max(np.abs(result.top_logprobs - ref_top)) <= 1e-4
        # Each returned alternative carries its own logprob.
        own = np.take_along_axis(ref_rows, result.top_ids, axis=1)
        assert np.max(np.abs(result.top_logprobs - own)) <= 1e-4
        assert np.all(np.diff(result.top_logprobs, axis=1) <= 0)


def test_forward_matches_float64_reference(
    backend: HFBackend, token_ids: list[list[int]], reference_logprobs: Callable[..., np.ndarray]
) -> None:
    ranks: set[int] = set()
    for ids in token_ids:
        (result,) = backend.forward([ForwardItem(tuple(ids), 1, 5, True)])
        _check_against_reference(result, ids, 1, reference_logprobs(ids))
        ranks.update(int(r) for r in result.ranks)
    # Ranks are informative: the random model is not uniform.
    assert len(ranks) > 10


def test_rank_one_is_the_top_entry(backend: HFBackend, token_ids: list[list[int]]) -> None:
    ids = token_ids[0]
    (first,) = backend.forward([ForwardItem(tuple(ids), 1, 3, True)])
    greedy = [*ids[:6], int(first.top_ids[5, 0])]  # row 5 holds the alternatives at position 6
    (result,) = backend.forward([ForwardItem(tuple(greedy), 1, 3, True)])
    assert result.ranks[-1] == 1
    assert result.top_ids[-1, 0] == greedy[-1]
    assert result.logprobs[-1] == result.top_logprobs[-1, 0]


def test_top_k_zero_returns_empty_alternatives(
    backend: HFBackend, token_ids: list[list[int]]
) -> None:
    (result,) = backend.forward([ForwardItem(tuple(token_ids[2]), 1, 0, True)])
    assert result.top_ids.shape == (len(token_ids[2]) - 1, 0)
    assert result.top_logprobs.shape == (len(token_ids[2]) - 1, 0)
    assert result.ranks.dtype == np.int64 and np.all(result.ranks >= 1)


def test_batch_of_different_lengths_equals_one_by_one(
    backend: HFBackend, token_ids: list[list[int]]
) -> None:
    items = [ForwardItem(tuple(ids), 1, 4, True) for ids in token_ids]
    batched = backend.forward(items)
    assert len(batched) == len(items)
    for item, got in zip(items, batched, strict=True):
        (alone,) = backend.forward([item])
        assert got.logprobs.shape == (item.num_scored,)
        # Batched vs alone: the contract's tolerance, not one CPU's matmul rounding.
        assert np.max(np.abs(got.logprobs - alone.logprobs)) <= batch_invariance_atol(
            alone.logprobs
        )
        assert np.max(np.abs(got.top_logprobs - alone.top_logprobs)) <= batch_invariance_atol(
            alone.top_logprobs
        )
        assert_ranks_agree(got.ranks, alone.ranks)


def test_mixed_top_k_in_one_batch(backend: HFBackend, token_ids: list[list[int]]) -> None:
    items = [
        ForwardItem(tuple(token_ids[0]), 1, 0, True),
        ForwardItem(tuple(token_ids[1]), 1, 7, True),
    ]
    plain, with_top = backend.forward(items)
    assert plain.top_ids.shape[1] == 0
    assert with_top.top_ids.shape == (len(token_ids[1]) - 1, 7)


def test_whole_rows_only_for_the_items_that_ask(
    monkeypatch: pytest.MonkeyPatch,
    backend: HFBackend,
    token_ids: list[list[int]],
    reference_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    """In a batch mixing items with and without ``with_full``, whole log-softmax rows are
    computed and kept for the former only (equal to the float64 reference), and every item
    scores as alone."""
    items = [
        ForwardItem(tuple(ids), 1, 2, True, with_full=k % 2 == 0) for k, ids in enumerate(token_ids)
    ]
    full_rows: list[int] = []
    score = hf.score_hidden_states

    def counting(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        full_rows.append(hidden.shape[0] if kwargs["with_full"] else 0)
        return score(hidden, *args, **kwargs)

    monkeypatch.setattr(hf, "score_hidden_states", counting)
    mixed = backend.forward(items)
    assert sum(full_rows) == sum(item.num_scored for item in items if item.with_full)
    for k, (item, got) in enumerate(zip(items, mixed, strict=True)):
        (alone,) = backend.forward([item])
        tol = batch_invariance_atol(alone.logprobs)
        np.testing.assert_allclose(
            got.logprobs, alone.logprobs, rtol=BATCH_INVARIANCE_REL, atol=tol
        )
        assert_top_ids_agree(got.top_ids, alone.top_ids, alone.top_logprobs, tol)
        if item.with_full:
            assert got.full_logprobs is not None
            want = reference_logprobs(token_ids[k])
            assert np.max(np.abs(got.full_logprobs - want)) <= batch_invariance_atol(want)
        else:
            assert got.full_logprobs is None


def test_score_from_later_position(
    backend: HFBackend, token_ids: list[list[int]], reference_logprobs: Callable[..., np.ndarray]
) -> None:
    ids = token_ids[0]
    full = backend.forward([ForwardItem(tuple(ids), 1, 2, True)])[0]
    for score_from in (2, 5, len(ids) - 1):
        (part,) = backend.forward([ForwardItem(tuple(ids), score_from, 2, True)])
        assert part.logprobs.shape == (len(ids) - score_from,)
        # Another forward pass (the head sees other positions): the contract's tolerance.
        np.testing.assert_allclose(
            part.logprobs,
            full.logprobs[score_from - 1 :],
            rtol=BATCH_INVARIANCE_REL,
            atol=BATCH_INVARIANCE_ABS,
        )
        _check_against_reference(part, ids, score_from, reference_logprobs(ids))


def test_backend_info_and_special_ids(tiny_model_dir: Path, backend: HFBackend) -> None:
    assert backend.info.backend == "transformers"
    assert backend.info.dtype == "float32"
    assert backend.info.device == "cpu"
    assert backend.info.max_context == 64
    assert backend.bos_id() == 1
    capped = HFBackend(tiny_model_dir, dtype="float32", device="cpu", max_context=16)
    assert capped.info.max_context == 16
    capped.warmup()


def test_empty_batch(backend: HFBackend) -> None:
    assert backend.forward([]) == []


def test_pick_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pick_device("cuda")


def test_pick_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert pick_dtype("float32", cpu) is torch.float32
    assert pick_dtype("bfloat16", cpu) is torch.bfloat16
    assert pick_dtype("float16", cpu) is torch.float16
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert pick_dtype("auto", cpu) is torch.float32
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert pick_dtype("auto", cpu) is torch.bfloat16
    with pytest.raises(KeyError):
        pick_dtype("float8", cpu)


@pytest.mark.parametrize(("native", "want"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_dtype_on_cuda_takes_bf16_only_where_the_gpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, want: torch.dtype
) -> None:
    """A pre-Ampere GPU (T4, V100) only emulates bf16: slow here, and refused by vLLM."""

    def bf16_supported(including_emulation: bool = True) -> bool:
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
    assert pick_dtype("auto", torch.device("cuda")) is want


def test_ranks_are_skipped_unless_asked(backend: HFBackend, token_ids: list[list[int]]) -> None:
    ids = tuple(token_ids[0])
    (with_ranks,) = backend.forward([ForwardItem(ids, 1, 0, True)])
    (without,) = backend.forward([ForwardItem(ids, 1, 0, False)])
    # Ranks take whole rows of logits; without them the head is sliced: two reductions.
    np.testing.assert_allclose(
        with_ranks.logprobs,
        without.logprobs,
        rtol=BATCH_INVARIANCE_REL,
        atol=BATCH_INVARIANCE_ABS,
    )
    assert (with_ranks.ranks >= 1).all()
    assert (without.ranks == 0).all()


@pytest.mark.parametrize("vocab_slice", [1, 37, 4096, None])
def test_sliced_head_matches_float64_reference(
    tiny_model_dir: Path,
    token_ids: list[list[int]],
    reference_logprobs: Callable[..., np.ndarray],
    vocab_slice: int | None,
) -> None:
    """Plain logprobs (no ranks, no top-k) go through the vocabulary one slice at a time
    (``None``: whole rows); whatever the slice, they equal the float64 reference and a
    batch equals its texts alone."""
    sliced = HFBackend(tiny_model_dir, dtype="float32", device="cpu", vocab_slice=vocab_slice)
    items = [ForwardItem(tuple(ids), 1, 0, False) for ids in token_ids]
    batched = sliced.forward(items)
    for ids, item, got in zip(token_ids, items, batched, strict=True):
        ref = reference_logprobs(ids)[np.arange(len(ids) - 1), ids[1:]]
        assert np.max(np.abs(got.logprobs - ref)) <= 1e-4
        assert (got.ranks == 0).all() and got.top_ids.shape == (len(ids) - 1, 0)
        (alone,) = sliced.forward([item])
        assert np.max(np.abs(got.logprobs - alone.logprobs)) <= batch_invariance_atol(
            alone.logprobs
        )


@pytest.mark.parametrize("layout", ["ragged", "padded"])
def test_the_last_token_is_not_run_unless_its_next_token_is_asked(
    tiny_model_dir: Path,
    token_ids: list[list[int]],
    reference_logprobs: Callable[..., np.ndarray],
    layout: str,
) -> None:
    """A sequence's last token predicts nothing, so the model runs one token less per
    window; the scores are those of the whole window all the same."""
    # Eager, so the hook sees the tokens; a traced body runs the same windows, which
    # `ForwardItem.model_input` cut before either runs.
    backend = HFBackend(
        tiny_model_dir, dtype="float32", device="cpu", attention=layout, trace_body="off"
    )
    fed: list[int] = []  # tokens per forward (one window each: no padding)
    hook = backend.model.base_model.embed_tokens.register_forward_hook(
        lambda _module, args, _out: fed.append(int(args[0].shape[-1]))
    )
    ids = tuple(token_ids[0])
    try:
        (plain,) = backend.forward([ForwardItem(ids, 1, 3, True)])
        (with_next,) = backend.forward([ForwardItem(ids, 1, 3, True, next_token=True)])
    finally:
        hook.remove()
    assert fed == [len(ids) - 1, len(ids)]
    _check_against_reference(plain, list(ids), 1, reference_logprobs(list(ids)))
    np.testing.assert_allclose(
        plain.logprobs, with_next.logprobs, rtol=BATCH_INVARIANCE_REL, atol=BATCH_INVARIANCE_ABS
    )
    assert with_next.next_top_ids is not None and plain.next_top_ids is None


def test_model_input_keeps_what_a_later_token_or_the_caller_needs() -> None:
    ids = (5, 6, 7, 8)
    assert ForwardItem(ids, 1).model_input == (5, 6, 7)
    assert ForwardItem(ids, 1, next_token=True).model_input == ids
    assert ForwardItem(ids, 1, parents=(-1, 0, 1, 1)).model_input == ids
    assert ForwardItem((5,), 1).model_input == (5,)


def test_cuda_leaves_out_cudnn_attention_process_wide() -> None:
    """cuDNN's attention plans every new shape anew; scoring batches rarely repeat one. One
    process-wide switch (a per-forward context raced between models' threads). The flag
    is process state, so this runs without a GPU."""
    import torch.backends.cuda as backends_cuda

    before = backends_cuda.cudnn_sdp_enabled()
    try:
        backends_cuda.enable_cudnn_sdp(True)
        precision.skip_cudnn_attention(torch.device("cpu"))
        assert backends_cuda.cudnn_sdp_enabled()
        precision.skip_cudnn_attention(torch.device("cuda"))
        assert not backends_cuda.cudnn_sdp_enabled()
        assert backends_cuda.flash_sdp_enabled() and backends_cuda.mem_efficient_sdp_enabled()
    finally:
        backends_cuda.enable_cudnn_sdp(before)


def test_a_soft_capped_model_loaded_with_sdpa_runs_eager() -> None:
    """Some transformers releases load Gemma 2 with SDPA, which drops its soft cap."""
    switched: list[str] = []

    def model(softcap: float | None, implementation: str) -> Any:
        config = SimpleNamespace(
            attn_logit_softcapping=softcap, _attn_implementation=implementation
        )
        return SimpleNamespace(config=config, set_attn_implementation=switched.append)

    keep_attention_softcap(model(50.0, "sdpa"))
    assert switched == ["eager"]
    for other in (model(None, "sdpa"), model(50.0, "eager"), model(50.0, "flash_attention_2")):
        keep_attention_softcap(other)
    assert switched == ["eager"]
