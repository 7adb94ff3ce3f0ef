"""Entropy and the Min-K% / Min-K%++ scores against direct float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.scoring.compare import compare_positions
from service.scoring.distribution import (
    min_k_count,
    min_k_plus_plus,
    min_k_prob,
    summarize_entropy,
)
from service.scoring.logprobs import distribution_stats, logprobs_from_logits


def test_distribution_stats_match_float64() -> None:
    torch.manual_seed(0)
    logits = torch.randn(7, 300) * 4
    logits[0] = -1e4
    logits[0, 3] = 50.0  # nearly one-hot: entropy and spread near 0
    entropy, std = distribution_stats(torch.log_softmax(logits.float(), dim=-1))
    ref = torch.log_softmax(logits.double(), dim=-1)
    p = ref.exp()
    ref_entropy = -(p * ref).sum(-1)
    ref_std = (p * (ref + ref_entropy[:, None]) ** 2).sum(-1).sqrt()
    torch.testing.assert_close(entropy.double(), ref_entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-4, atol=1e-5)
    assert float(entropy[0]) < 1e-6


def test_ruled_out_tokens_add_nothing_rather_than_nan() -> None:
    """A logit of -inf (p = 0, log p = -inf) is a token the model rules out: entropy and
    spread are those of the remaining tokens, not 0 * -inf = NaN."""
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")], [1.0, -1.0, 0.5, 2.0]])
    entropy, std = distribution_stats(torch.log_softmax(logits, dim=-1))
    assert torch.isfinite(entropy).all() and torch.isfinite(std).all()
    assert float(entropy[0]) == pytest.approx(math.log(2.0), abs=1e-6)
    assert float(std[0]) == pytest.approx(0.0, abs=1e-6)


def test_compare_positions_with_ruled_out_tokens_stays_finite() -> None:
    inf = float("-inf")
    with np.errstate(divide="ignore"):  # log 0 = -inf, on purpose
        a = np.log(np.array([[0.5, 0.5, 0.0]], dtype=np.float32))  # a rules out token 2
    b = np.log(np.array([[0.25, 0.25, 0.5]], dtype=np.float32))
    forward = compare_positions(a, b)
    assert a[0, 2] == inf and np.isfinite(forward.kl).all()
    assert forward.kl[0] == pytest.approx(math.log(2.0), abs=1e-6)  # sum 0.5 log(0.5/0.25)
    assert forward.cross_entropy[0] == pytest.approx(math.log(4.0), abs=1e-6)
    backward = compare_positions(b, a)  # b's mass on a token a rules out: floored, finite
    assert np.isfinite(backward.kl).all() and backward.kl[0] > 1000


def test_uniform_distribution_has_log_v_entropy_and_no_spread() -> None:
    entropy, std = distribution_stats(torch.log_softmax(torch.zeros(2, 1000), dim=-1))
    assert torch.allclose(entropy, torch.full((2,), math.log(1000.0)), atol=1e-4)
    assert float(std.max()) < 1e-3


def test_stats_only_when_asked() -> None:
    logits, targets = torch.randn(3, 50), torch.tensor([1, 2, 3])
    assert logprobs_from_logits(logits, targets, 0).entropy is None
    with_stats = logprobs_from_logits(logits, targets, 0, with_stats=True)
    assert with_stats.entropy is not None and with_stats.logprob_std is not None


def _papers_min_k(logprobs: np.ndarray, ratio: float) -> float:
    """Min-K% Prob as the paper's code computes it (sorted, first int(n * ratio))."""
    k_length = max(1, int(len(logprobs) * ratio))
    return float(np.mean(np.sort(logprobs)[:k_length]))


def _papers_min_k_plus_plus(
    lp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, ratio: float
) -> float:
    scores = (lp - mu) / sigma
    k_length = max(1, int(len(scores) * ratio))
    return float(np.mean(np.sort(scores)[:k_length]))


@pytest.mark.parametrize("k", [5.0, 20.0, 50.0, 100.0])
def test_min_k_matches_the_papers_formulas(k: float) -> None:
    rng = np.random.default_rng(3)
    lp = -rng.gamma(2.0, 2.0, size=37)
    entropy = rng.uniform(0.5, 5.0, size=37)
    std = rng.uniform(0.3, 3.0, size=37)
    assert min_k_prob(lp, k) == pytest.approx(_papers_min_k(lp, k / 100), rel=1e-12)
    assert min_k_plus_plus(lp, entropy, std, k) == pytest.approx(
        _papers_min_k_plus_plus(lp, -entropy, std, k / 100), rel=1e-12
    )


def test_min_k_edges() -> None:
    assert min_k_count(0, 20) == 0 and min_k_count(3, 20) == 1 and min_k_count(10, 100) == 10
    assert min_k_prob(np.array([]), 20) is None
    assert min_k_prob(np.array([-1.0, -5.0, -2.0]), 20) == -5.0  # at least one token
    with pytest.raises(ValueError):
        min_k_count(10, 0)
    with pytest.raises(ValueError):
        min_k_count(10, 100.5)


def test_entropy_summary_units() -> None:
    summary = summarize_entropy(np.array([1.0, 2.0, 3.0]), num_chars=4)
    assert summary.mean_entropy == pytest.approx(2.0)
    assert summary.entropy_bits_per_char == pytest.approx(6.0 / math.log(2) / 4)
    assert summarize_entropy(np.array([]), 0) == summarize_entropy(np.array([]), 5)
    assert summarize_entropy(np.array([]), 5).mean_entropy is None
