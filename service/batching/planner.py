"""Cutting a set of windows into forward batches under a padded-token budget.

The cost of a right-padded batch is ``longest x count``; sorting by length before cutting
keeps similar lengths together, so little of the budget goes to padding.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], max_tokens: int, max_size: int) -> list[list[int]]:
    """Group indices of ``lengths`` into batches, each with ``max(len) * count <= max_tokens``
    (a single longer item still gets a batch of its own) and at most ``max_size`` items.

    Indices are visited longest first, so batches hold neighbours in length.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = lengths[index]
        width = max(longest, length)
        if current and (width * (len(current) + 1) > max_tokens or len(current) >= max_size):
            batches.append(current)
            current, width = [], length
        current.append(index)
        longest = width
    if current:
        batches.append(current)
    return batches


def padded_cost(lengths: Sequence[int]) -> int:
    """Tokens a right-padded batch of these lengths occupies."""
    return max(lengths, default=0) * len(lengths)
