"""The cost of a forward pass, in tokens, by batch layout: the one place it is defined.

A padded batch computes every row to the longest window (longest x count tokens); a ragged
batch computes each window's own tokens (their sum). The batcher fills batches up to a
token budget in these units and reports padding from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.backends.base import BatchLayout


@dataclass(frozen=True)
class BatchCost:
    """How a layout prices a batch of window lengths (in tokens computed)."""

    layout: BatchLayout

    def tokens(self, lengths: Sequence[int]) -> int:
        """Tokens one forward pass over windows of ``lengths`` computes, pads included."""
        return self.tokens_of(len(lengths), sum(lengths), max(lengths, default=0))

    def tokens_of(self, count: int, total: int, longest: int) -> int:
        """The same from a batch's running tallies: ``count`` windows, ``total`` real
        tokens, the longest window ``longest`` tokens."""
        return longest * count if self.layout is BatchLayout.PADDED else total

    def padding_ratio(self, lengths: Sequence[int]) -> float:
        """Share of the computed tokens that are pads (0 for a ragged batch)."""
        computed = self.tokens(lengths)
        return 1.0 - sum(lengths) / computed if computed else 0.0

    @property
    def groups_by_length(self) -> bool:
        """Whether batching windows of similar length saves work (padded layouts only);
        otherwise batches are taken in arrival order."""
        return self.layout is BatchLayout.PADDED
