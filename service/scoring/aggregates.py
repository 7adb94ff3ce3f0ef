"""Aggregate scores from per-token logprobs (natural log).

``mean_nll`` is nats per scored token, ``ppl = exp(mean_nll)``, ``bits_per_byte`` and
``bits_per_char`` divide the total NLL in bits by the UTF-8 bytes / code points of the
scored tokens' text. Quantities with no scored token are ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LN2 = math.log(2.0)
# The logprob reported for a token the model rules out (log p = -inf: a logit of -inf),
# since JSON has no infinity; OpenAI and vLLM report -9999 likewise. Any float32 log p
# that is not -inf is far above it (exp underflows to 0 below about -104).
LOWEST_LOGPROB = -9999.0


@dataclass(frozen=True)
class Aggregates:
    """Summary of one scored span. ``sum_logprob`` is in nats (<= 0)."""

    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None
    bits_per_byte: float | None
    bits_per_char: float | None


def safe_exp(x: float) -> float:
    """exp(x), saturating at the largest float instead of overflowing to inf."""
    if math.isnan(x):
        return x
    return math.exp(x) if x < 709.0 else math.exp(709.0)


def summarize(logprobs: Sequence[float], num_chars: int, num_bytes: int) -> Aggregates:
    """Aggregate the scored tokens' logprobs (nats) over their text's chars and bytes."""
    n = len(logprobs)
    total = math.fsum(logprobs)
    if n == 0:
        return Aggregates(0, 0.0, None, None, None, None)
    mean_nll = -total / n
    bits = -total / LN2
    return Aggregates(
        num_scored_tokens=n,
        sum_logprob=total,
        mean_nll=mean_nll,
        ppl=safe_exp(mean_nll),
        bits_per_byte=bits / num_bytes if num_bytes > 0 else None,
        bits_per_char=bits / num_chars if num_chars > 0 else None,
    )


def token_weighted(
    parts: Iterable[tuple[int, float]],
) -> tuple[int, float, float | None, float | None]:
    """Pool (num_scored_tokens, sum_logprob) pairs: (n, sum, mean_nll, ppl) over all tokens."""
    n = 0
    sums: list[float] = []
    for count, total in parts:
        n += count
        sums.append(total)
    total = math.fsum(sums)
    if n == 0:
        return 0, 0.0, None, None
    mean_nll = -total / n
    return n, total, mean_nll, safe_exp(mean_nll)
