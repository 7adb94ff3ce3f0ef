"""Two models on the same text: divergence and detection scores from their full
next-token distributions at the same positions (same tokenizer), and the tokenizer-free
bits-per-byte ratio. Natural logs (nats) unless a name says bits.

- KL divergence ``KL(P_a || P_b) = sum_v P_a(v) (log P_a(v) - log P_b(v))`` per position
  (llama.cpp's ``--kl-divergence`` reports its mean; a = the reference model).
- Top-1 agreement: the share of positions where both models' most likely token is the same.
- Binoculars (Hans et al., 2024), as its reference code computes it: the text's mean NLL
  under the *performer* (model b) over the mean cross-entropy ``-sum_v P_a(v) log P_b(v)``
  of the *observer*'s (model a) distribution under the performer's. Low values suggest
  machine-generated text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.scoring.aggregates import LOWEST_LOGPROB

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class PositionComparison:
    """Per scored position: ``kl`` = KL(P_a || P_b) and ``cross_entropy`` =
    -sum P_a log P_b (nats), ``agree`` = same argmax."""

    kl: npt.NDArray[np.float64]
    cross_entropy: npt.NDArray[np.float64]
    agree: npt.NDArray[np.bool_]


def compare_positions(logprobs_a: FloatArray, logprobs_b: FloatArray) -> PositionComparison:
    """Compare two models' log-softmax rows [n, V] over their common vocabulary prefix
    (a padded vocabulary's extra rows hold no probability)."""
    vocab = min(logprobs_a.shape[-1], logprobs_b.shape[-1])
    # A ruled-out token (log p = -inf) at LOWEST_LOGPROB: sums stay finite, not NaN.
    a = np.maximum(np.asarray(logprobs_a[:, :vocab], dtype=np.float64), LOWEST_LOGPROB)
    b = np.maximum(np.asarray(logprobs_b[:, :vocab], dtype=np.float64), LOWEST_LOGPROB)
    p_a = np.exp(a)
    kl = np.maximum((p_a * (a - b)).sum(axis=-1), 0.0)
    cross_entropy = -(p_a * b).sum(axis=-1)
    agree = a.argmax(axis=-1) == b.argmax(axis=-1)
    return PositionComparison(kl, cross_entropy, agree)


def binoculars(nll_performer: FloatArray, cross_entropy: FloatArray) -> float | None:
    """Mean NLL under the performer over the mean observer-performer cross-entropy."""
    if len(nll_performer) == 0:
        return None
    return float(np.mean(nll_performer) / np.mean(cross_entropy))


def bits_per_byte_ratio(a: float | None, b: float | None) -> float | None:
    """Model a's bits per byte over model b's: below 1, a finds the text less surprising.
    Bytes do not depend on the tokenizer, so any two models compare."""
    if a is None or b is None or b == 0:
        return None
    return a / b
