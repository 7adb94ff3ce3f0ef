"""sliced_target_logprobs (vocabulary slices, no full row of logits) against a float64
log-softmax of the same projection, and against the row-chunked path it replaces."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL

from service.scoring.logprobs import score_hidden_states
from service.scoring.projection import VocabProjection, sliced_target_logprobs

V, H = 301, 24  # a prime vocabulary: no slice size divides it


def _projection(
    dtype: torch.dtype = torch.float32,
    slice_size: int = 64,
    bias: bool = False,
    scale: float | None = None,
    softcap: float | None = None,
) -> VocabProjection:
    gen = torch.Generator().manual_seed(3)
    weight = (torch.randn(V, H, generator=gen) * 0.6).to(dtype)
    shift = (torch.randn(V, generator=gen) * 2).to(dtype) if bias else None
    return VocabProjection(weight, shift, scale, softcap, slice_size)


def _inputs(n: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    hidden = (torch.randn(n, H, generator=gen) * 1.5).to(dtype)
    return hidden, torch.randint(0, V, (n,), generator=gen)


def _reference(projection: VocabProjection, hidden: torch.Tensor, targets: torch.Tensor):
    """float64 log-softmax of the logits the projection computes (same rounded inputs)."""
    logits = torch.nn.functional.linear(
        hidden.double(),
        projection.weight.double(),
        None if projection.bias is None else projection.bias.double(),
    )
    if projection.scale is not None:
        logits = logits * projection.scale
    if projection.softcap is not None:
        logits = torch.tanh(logits / projection.softcap) * projection.softcap
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("slice_size", [1, 7, 64, V, 4096])
@pytest.mark.parametrize("rows", [1, 5, 2048])
def test_sliced_logprobs_match_float64_log_softmax(slice_size: int, rows: int) -> None:
    projection = _projection(slice_size=slice_size, bias=True)
    hidden, targets = _inputs(23)
    got = sliced_target_logprobs(hidden, targets, projection, rows=rows)
    assert got.dtype == torch.float32 and got.shape == (23,)
    # One lone computation against float64: float32 rounding of logits of size ~10.
    torch.testing.assert_close(
        got.double(), _reference(projection, hidden, targets), rtol=0, atol=2e-5
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_heads_are_reduced_in_float32(dtype: torch.dtype) -> None:
    projection = _projection(dtype, slice_size=50)
    hidden, targets = _inputs(17, dtype)
    got = sliced_target_logprobs(hidden, targets, projection)
    assert got.dtype == torch.float32
    # The reference takes the same half-precision logits the matmul rounds to: compare
    # against the float64 log-softmax of exactly those, so the error is float32's only.
    logits = projection(hidden).double()
    expected = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5)


def test_scale_and_softcap_are_applied_per_slice() -> None:
    projection = _projection(slice_size=40, bias=True, scale=0.5, softcap=6.0)
    hidden, targets = _inputs(19)
    got = sliced_target_logprobs(hidden, targets, projection)
    torch.testing.assert_close(
        got.double(), _reference(projection, hidden, targets), rtol=0, atol=2e-5
    )


def test_a_confident_target_keeps_its_precision_near_zero() -> None:
    """A logprob near 0 is (z_t - max) - log(sum), as log_softmax computes it, not
    z_t - logsumexp: with logits near 1000 (float32 spacing 6e-5) the difference of two
    large numbers would lose the small logprob's digits."""
    weight = torch.zeros(V, H)
    weight[17, 0] = 10.0  # entry 17 leads every other by 10 nats
    projection = VocabProjection(weight, torch.full((V,), 1000.0), slice_size=32)
    hidden = torch.zeros(3, H)
    hidden[:, 0] = 1.0
    targets = torch.tensor([17, 17, 18])
    got = sliced_target_logprobs(hidden, targets, projection).double()
    expected = _reference(projection, hidden, targets)
    assert -0.014 < float(expected[0]) < -0.013
    # z_t - logsumexp is off by 1.6e-3 relative here; log_softmax by 5e-5.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=0)


def test_a_slice_of_minus_infinity_contributes_nothing() -> None:
    projection = _projection(slice_size=50, bias=True)
    bias = projection.bias
    assert bias is not None
    bias[50:100] = -torch.inf  # one whole slice can never be produced
    hidden, targets = _inputs(11)
    targets = targets.clamp_max(49)
    got = sliced_target_logprobs(hidden, targets, projection)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        got.double(), _reference(projection, hidden, targets), rtol=0, atol=2e-5
    )


@dataclass(frozen=True)
class _CountingProjection(VocabProjection):
    shapes: list[tuple[int, int]] = field(default_factory=list)

    def logits(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        out = super().logits(hidden, start, stop)
        self.shapes.append((out.shape[0], out.shape[1]))
        return out


def test_at_most_rows_by_slice_logits_exist_at_once() -> None:
    base = _projection()
    projection = _CountingProjection(base.weight, slice_size=64)
    hidden, targets = _inputs(50)
    sliced_target_logprobs(hidden, targets, projection, rows=16)
    assert max(r for r, _ in projection.shapes) == 16
    assert max(c for _, c in projection.shapes) == 64
    # Every (row, vocabulary entry) pair is projected exactly once.
    assert sum(r * c for r, c in projection.shapes) == 50 * V


def test_no_positions() -> None:
    got = sliced_target_logprobs(torch.zeros(0, H), torch.zeros(0, dtype=torch.long), _projection())
    assert got.shape == (0,) and got.dtype == torch.float32


def test_mismatched_positions_raise() -> None:
    with pytest.raises(ValueError):
        sliced_target_logprobs(torch.zeros(3, H), torch.zeros(2, dtype=torch.long), _projection())


def test_score_hidden_states_slices_only_when_nothing_else_is_asked() -> None:
    projection = _CountingProjection(_projection().weight, slice_size=64)
    hidden, targets = _inputs(21)
    with torch.no_grad():
        plain = score_hidden_states(hidden, targets, projection, top_k=0, with_ranks=False)
        assert {c for _, c in projection.shapes} == {64, V - 4 * 64}
        projection.shapes.clear()
        full = score_hidden_states(hidden, targets, projection, top_k=3, with_ranks=True)
        assert {c for _, c in projection.shapes} == {V}  # whole rows: ranks and top-k need them
    assert (plain.ranks == 0).all() and plain.top_ids.shape == (21, 0)
    assert (full.ranks >= 1).all() and full.top_ids.shape == (21, 3)
    # Two ways of reducing the same logits: equal within the contract's tolerance.
    torch.testing.assert_close(
        plain.logprobs, full.logprobs, rtol=BATCH_INVARIANCE_REL, atol=BATCH_INVARIANCE_ABS
    )
