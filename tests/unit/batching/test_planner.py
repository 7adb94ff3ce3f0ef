"""plan_batches: a padded-token budget and a size cap, longest first."""

from __future__ import annotations

import itertools
import random

import pytest

from service.batching.planner import padded_cost, plan_batches


def _check(lengths: list[int], batches: list[list[int]], max_tokens: int, max_size: int) -> None:
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths))), "every index exactly once"
    for batch in batches:
        assert batch, "no empty batch"
        assert len(batch) <= max_size
        cost = padded_cost([lengths[i] for i in batch])
        assert cost <= max_tokens or len(batch) == 1


def _random_lengths(seed: int, n: int, hi: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, hi) for _ in range(n)]


CASES = [
    (seed, n, hi, max_tokens, max_size)
    for seed, (n, hi), max_tokens, max_size in itertools.product(
        range(3), [(1, 5), (10, 50), (57, 300)], [64, 512, 4096], [1, 4, 32]
    )
]


@pytest.mark.parametrize(("seed", "n", "hi", "max_tokens", "max_size"), CASES)
def test_budget_size_and_coverage(
    seed: int, n: int, hi: int, max_tokens: int, max_size: int
) -> None:
    lengths = _random_lengths(seed, n, hi)
    _check(lengths, plan_batches(lengths, max_tokens, max_size), max_tokens, max_size)


def test_padded_cost() -> None:
    assert padded_cost([3, 10, 7]) == 30
    assert padded_cost([5]) == 5
    assert padded_cost([]) == 0


def test_empty_input() -> None:
    assert plan_batches([], 100, 8) == []


def test_cost_counts_padding_not_sum() -> None:
    # Sum is 10 + 1 + 1 = 12 <= 20, but padded to the longest it is 30 > 20.
    batches = plan_batches([10, 1, 1], max_tokens=20, max_size=8)
    _check([10, 1, 1], batches, 20, 8)
    assert all(padded_cost([[10, 1, 1][i] for i in b]) <= 20 for b in batches)
    assert batches == [[0, 1], [2]]


def test_exact_fit_is_allowed() -> None:
    assert plan_batches([4, 4, 4, 4], max_tokens=16, max_size=8) == [[0, 1, 2, 3]]
    assert plan_batches([4, 4, 4, 4, 4], max_tokens=16, max_size=8) == [[0, 1, 2, 3], [4]]


def test_max_size_caps_the_batch() -> None:
    batches = plan_batches([1] * 10, max_tokens=10_000, max_size=3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]


def test_over_long_item_gets_its_own_batch() -> None:
    lengths = [5, 100, 5, 5]
    batches = plan_batches(lengths, max_tokens=20, max_size=8)
    assert [1] in batches
    assert sorted(len(b) for b in batches) == [1, 3]
    _check(lengths, batches, 20, 8)


def test_several_over_long_items_are_each_alone() -> None:
    lengths = [50, 60, 3, 70]
    batches = plan_batches(lengths, max_tokens=40, max_size=8)
    assert batches[:3] == [[3], [1], [0]]
    assert batches[3] == [2]


def test_longest_first_and_neighbours_grouped() -> None:
    lengths = [3, 100, 4, 98, 2, 97, 5, 99]
    batches = plan_batches(lengths, max_tokens=400, max_size=4)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[97, 98, 99, 100], [2, 3, 4, 5]]
    assert batches[0][0] == 1  # the longest leads


def test_batches_are_contiguous_runs_of_the_length_order() -> None:
    lengths = _random_lengths(7, 80, 200)
    batches = plan_batches(lengths, max_tokens=600, max_size=6)
    flat_lengths = [lengths[i] for b in batches for i in b]
    assert flat_lengths == sorted(lengths, reverse=True)
    for b in batches:
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_padding_stays_small_for_mixed_lengths() -> None:
    lengths = [10, 200] * 20
    batches = plan_batches(lengths, max_tokens=2000, max_size=64)
    total_padded = sum(padded_cost([lengths[i] for i in b]) for b in batches)
    # Sorting keeps the short ones away from the long ones: at most one mixed batch.
    mixed = [b for b in batches if len({lengths[i] for i in b}) > 1]
    assert len(mixed) <= 1
    assert total_padded <= sum(lengths) + 200 * 10


def test_ties_keep_input_order() -> None:
    assert plan_batches([7, 7, 7], max_tokens=100, max_size=2) == [[0, 1], [2]]


def test_greedy_fills_each_batch_before_starting_the_next() -> None:
    lengths = [8, 8, 8, 6, 6, 6, 6]
    batches = plan_batches(lengths, max_tokens=24, max_size=10)
    assert batches == [[0, 1, 2], [3, 4, 5, 6]]
