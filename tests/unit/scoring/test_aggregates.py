"""summarize, token_weighted and safe_exp."""

from __future__ import annotations

import functools
import math
import operator
import sys

import pytest

from service.scoring.aggregates import LN2, Aggregates, safe_exp, summarize, token_weighted


def test_ln2() -> None:
    assert math.isclose(LN2, math.log(2), rel_tol=0, abs_tol=1e-15)


def test_summarize_definitions() -> None:
    lps = [-1.0, -2.5, -0.25, -4.0]
    agg = summarize(lps, num_chars=10, num_bytes=13)
    total = -7.75
    assert agg.num_scored_tokens == 4
    assert math.isclose(agg.sum_logprob, total, rel_tol=1e-12)
    assert agg.mean_nll is not None and agg.ppl is not None
    assert math.isclose(agg.mean_nll, 7.75 / 4, rel_tol=1e-12)
    assert math.isclose(agg.ppl, math.exp(7.75 / 4), rel_tol=1e-12)
    assert agg.bits_per_byte is not None and agg.bits_per_char is not None
    assert math.isclose(agg.bits_per_byte, 7.75 / math.log(2) / 13, rel_tol=1e-12)
    assert math.isclose(agg.bits_per_char, 7.75 / math.log(2) / 10, rel_tol=1e-12)


def test_summarize_ppl_is_exp_mean_nll() -> None:
    agg = summarize([-0.1] * 7, num_chars=7, num_bytes=7)
    assert agg.mean_nll is not None and agg.ppl is not None
    assert math.isclose(agg.ppl, math.exp(agg.mean_nll), rel_tol=1e-12)
    assert math.isclose(agg.mean_nll, 0.1, rel_tol=1e-12)


def test_summarize_perfect_prediction() -> None:
    agg = summarize([0.0, 0.0], num_chars=3, num_bytes=3)
    assert agg.mean_nll == 0.0
    assert agg.ppl == 1.0
    assert agg.bits_per_byte == 0.0
    assert agg.bits_per_char == 0.0


def test_summarize_bytes_differ_from_chars_for_non_ascii() -> None:
    text = "привет"  # 6 code points, 12 UTF-8 bytes
    agg = summarize([-3.0, -3.0], num_chars=len(text), num_bytes=len(text.encode()))
    assert agg.bits_per_byte is not None and agg.bits_per_char is not None
    assert math.isclose(agg.bits_per_char, 2 * agg.bits_per_byte, rel_tol=1e-12)
    assert math.isclose(agg.bits_per_char, 6.0 / LN2 / 6, rel_tol=1e-12)


def test_summarize_zero_tokens() -> None:
    agg = summarize([], num_chars=5, num_bytes=5)
    assert agg == Aggregates(0, 0.0, None, None, None, None)


def test_summarize_zero_chars_or_bytes_gives_none_rates() -> None:
    agg = summarize([-1.0], num_chars=0, num_bytes=0)
    assert agg.num_scored_tokens == 1
    assert agg.mean_nll == 1.0
    assert agg.bits_per_byte is None
    assert agg.bits_per_char is None


def test_summarize_sum_is_exact_fsum() -> None:
    # Naive left-to-right addition loses every tiny term against the leading -1 (the
    # built-in sum() compensates since Python 3.12, so the naive sum is spelled out).
    lps = [-1.0] + [-1e-16] * 100
    assert functools.reduce(operator.add, lps) == -1.0
    agg = summarize(lps, num_chars=1, num_bytes=1)
    assert agg.sum_logprob == math.fsum(lps)
    assert math.isclose(agg.sum_logprob, -1.0 - 1e-14, rel_tol=1e-15)


def test_summarize_huge_nll_saturates_ppl() -> None:
    agg = summarize([-1000.0, -2000.0], num_chars=1, num_bytes=1)
    assert agg.ppl is not None
    assert math.isfinite(agg.ppl)
    assert agg.ppl == safe_exp(1500.0)


def test_token_weighted_pools_tokens_not_texts() -> None:
    parts = [(1, -10.0), (9, -9.0)]
    n, total, mean_nll, ppl = token_weighted(parts)
    assert n == 10
    assert math.isclose(total, -19.0, rel_tol=1e-12)
    assert mean_nll is not None and ppl is not None
    assert math.isclose(mean_nll, 1.9, rel_tol=1e-12)
    assert math.isclose(ppl, math.exp(1.9), rel_tol=1e-12)
    # Not the mean of per-text mean NLLs (10 and 1).
    assert not math.isclose(mean_nll, 5.5)


def test_token_weighted_matches_summarize_of_concatenation() -> None:
    a, b = [-0.3, -1.2, -2.0], [-0.7, -0.1]
    sa, sb = summarize(a, 1, 1), summarize(b, 1, 1)
    whole = summarize(a + b, 1, 1)
    n, total, mean_nll, ppl = token_weighted(
        [(sa.num_scored_tokens, sa.sum_logprob), (sb.num_scored_tokens, sb.sum_logprob)]
    )
    assert n == whole.num_scored_tokens
    assert math.isclose(total, whole.sum_logprob, rel_tol=1e-12)
    assert mean_nll is not None and whole.mean_nll is not None
    assert math.isclose(mean_nll, whole.mean_nll, rel_tol=1e-12)
    assert ppl is not None and whole.ppl is not None
    assert math.isclose(ppl, whole.ppl, rel_tol=1e-12)


def test_token_weighted_skips_empty_parts() -> None:
    n, total, mean_nll, ppl = token_weighted([(0, 0.0), (2, -2.0), (0, 0.0)])
    assert (n, total, mean_nll) == (2, -2.0, 1.0)
    assert ppl is not None and math.isclose(ppl, math.e, rel_tol=1e-12)


@pytest.mark.parametrize("parts", [[], [(0, 0.0)], [(0, 0.0), (0, 0.0)]])
def test_token_weighted_no_tokens(parts: list[tuple[int, float]]) -> None:
    assert token_weighted(parts) == (0, 0.0, None, None)


def test_token_weighted_accepts_a_generator() -> None:
    n, total, _, _ = token_weighted((k, -float(k)) for k in range(1, 4))
    assert (n, total) == (6, -6.0)


@pytest.mark.parametrize("x", [-1000.0, -1.0, 0.0, 0.5, 100.0, 708.9])
def test_safe_exp_matches_exp_in_range(x: float) -> None:
    assert math.isclose(safe_exp(x), math.exp(x), rel_tol=1e-15, abs_tol=0.0)


@pytest.mark.parametrize("x", [709.0, 710.0, 1e6, math.inf])
def test_safe_exp_saturates(x: float) -> None:
    value = safe_exp(x)
    assert math.isfinite(value)
    assert value == math.exp(709.0)
    assert value < sys.float_info.max


def test_safe_exp_is_monotone_across_the_cap() -> None:
    xs = [700.0, 705.0, 708.0, 708.999, 709.0, 720.0]
    values = [safe_exp(x) for x in xs]
    assert values == sorted(values)
