"""The batch cost model: what a forward pass computes, by layout."""

from __future__ import annotations

from service.backends.base import BatchLayout
from service.batching.cost import BatchCost


def test_padded_costs_longest_times_count() -> None:
    cost = BatchCost(BatchLayout.PADDED)
    assert cost.tokens([3, 10, 5]) == 30
    assert cost.tokens_of(3, 18, 10) == 30
    assert cost.padding_ratio([3, 10, 5]) == 1 - 18 / 30
    assert cost.groups_by_length


def test_ragged_costs_the_sum() -> None:
    cost = BatchCost(BatchLayout.RAGGED)
    assert cost.tokens([3, 10, 5]) == 18
    assert cost.tokens_of(3, 18, 10) == 18
    assert cost.padding_ratio([3, 10, 5]) == 0.0
    assert not cost.groups_by_length


def test_empty_batch_costs_nothing() -> None:
    for layout in BatchLayout:
        assert BatchCost(layout).tokens([]) == 0
        assert BatchCost(layout).padding_ratio([]) == 0.0
