"""Scores from the model's full next-token distribution: entropy summaries and the
membership (contamination) scores Min-K% Prob and Min-K%++.

Units: logprobs and entropies are natural logs (nats); ``entropy_bits_per_char`` is bits
per character (code point) of the scored text. Inputs are the scored tokens' values.

- Min-K% Prob (Shi et al., 2023, "Detecting Pretraining Data from Large Language Models"):
  the mean logprob of the k% least likely tokens of a text. Higher (closer to 0) means the
  text looks more like something the model was trained on.
- Min-K%++ (Zhang et al., 2024): each token's logprob is first standardised by the model's
  own distribution at that position, ``(log p(x_t) - mu_t) / sigma_t`` with
  ``mu_t = E_{z~p_t}[log p_t(z)]`` (= minus the entropy) and ``sigma_t`` the standard
  deviation of ``log p_t(z)`` under ``p_t``; then the k% lowest are averaged.

Both take ``int(n * k / 100)`` tokens as the papers' code does, but at least one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.scoring.aggregates import LN2

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class EntropySummary:
    """Mean entropy per scored token (nats) and the total entropy in bits per character of
    the scored text (comparable with ``bits_per_char``: expected, not observed, surprise)."""

    mean_entropy: float | None
    entropy_bits_per_char: float | None


def summarize_entropy(entropy: FloatArray, num_chars: int) -> EntropySummary:
    """Entropy summaries of the scored positions' distributions."""
    if len(entropy) == 0:
        return EntropySummary(None, None)
    total = math.fsum(float(h) for h in entropy)
    per_char = total / LN2 / num_chars if num_chars > 0 else None
    return EntropySummary(total / len(entropy), per_char)


def min_k_count(num_tokens: int, k_percent: float) -> int:
    """How many of ``num_tokens`` the k% lowest are: ``int(n k / 100)``, at least one."""
    if not 0 < k_percent <= 100:
        raise ValueError("k must be in (0, 100]")
    return max(1, int(num_tokens * k_percent / 100)) if num_tokens else 0


def min_k_prob(logprobs: FloatArray, k_percent: float) -> float | None:
    """Min-K% Prob: the mean of the k% lowest token logprobs (nats); None without tokens."""
    count = min_k_count(len(logprobs), k_percent)
    if count == 0:
        return None
    lowest = np.sort(np.asarray(logprobs, dtype=np.float64))[:count]
    return float(lowest.mean())


def min_k_plus_plus(
    logprobs: FloatArray, entropy: FloatArray, logprob_std: FloatArray, k_percent: float
) -> float | None:
    """Min-K%++: the mean of the k% lowest standardised token logprobs (unitless)."""
    count = min_k_count(len(logprobs), k_percent)
    if count == 0:
        return None
    mu = -np.asarray(entropy, dtype=np.float64)
    # A one-hot distribution has no spread; keep its score finite rather than +-inf.
    sigma = np.maximum(np.asarray(logprob_std, dtype=np.float64), 1e-12)
    z = (np.asarray(logprobs, dtype=np.float64) - mu) / sigma
    return float(np.sort(z)[:count].mean())
