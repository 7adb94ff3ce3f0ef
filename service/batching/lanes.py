"""Forward passes side by side: which lanes are busy, and how a batch is shared out.

A backend with more than one lane (``BatchedBackend.lanes``: two on a 2-core CPU) can run
passes side by side, each on an equal share of the device, or one pass on the whole
device. Side by side scores more tokens per second once there is enough work (a lone
short text on one core of two takes ~1.5x as long as on both; two passes of 16 short texts
side by side score 1.17x the tokens per second of such passes taking turns, NOTES). So
the batcher keeps every lane busy while work is queued, and gives the whole device to a
pass only when nothing else runs or waits and the batch does not split evenly into parts
big enough to be worth a lane each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.batching.cost import BatchCost
from service.batching.pending import PendingItem

# Below this many tokens a part answers sooner in one pass on the whole device: on the
# 2-core CPU two 40-token texts took 58 ms as one whole pass and 74 ms on a core each,
# two 100-token texts 98 and 99 ms, two of 300 tokens 234 and 202 ms (NOTES).
MIN_PART_TOKENS = 100
# The costliest part may cost at most this much more than an even share: a lane left
# idle by an uneven split wastes what side by side gains.
EVEN_SLACK = 1.2


def split_evenly(lengths: Sequence[int], parts: int, cost: BatchCost) -> list[list[int]] | None:
    """Indices of windows of ``lengths`` dealt into ``parts`` groups (or fewer, down to
    two) of near-equal cost in tokens, longest first, each to the cheapest group so far;
    None when no such split is even (the costliest group at most ``EVEN_SLACK`` times the
    mean) with every group worth ``MIN_PART_TOKENS``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for count in range(min(parts, len(lengths)), 1, -1):
        groups: list[list[int]] = [[] for _ in range(count)]
        costs, totals = [0] * count, [0] * count
        for i in order:
            cheapest = min(range(count), key=costs.__getitem__)
            group = groups[cheapest]
            group.append(i)
            totals[cheapest] += lengths[i]
            # Longest first: a group's first window is its longest.
            costs[cheapest] = cost.tokens_of(len(group), totals[cheapest], lengths[group[0]])
        if min(costs) >= MIN_PART_TOKENS and max(costs) <= EVEN_SLACK * sum(costs) / count:
            return [sorted(group) for group in groups]
    return None


@dataclass
class LaneBoard:
    """What each of a batcher's lanes is doing: the batch in its pass, a part of a split
    batch handed to it, and whether a pass holds the whole device (then nothing else
    starts). Not thread-safe: the batcher uses it under its own lock."""

    lanes: int
    running: dict[int, list[PendingItem]] = field(default_factory=dict)
    handed: dict[int, list[PendingItem]] = field(default_factory=dict)
    whole: bool = False

    def idle(self, besides: int) -> list[int]:
        """Lanes other than ``besides`` with no pass and nothing handed to them."""
        return [
            lane
            for lane in range(self.lanes)
            if lane != besides and lane not in self.running and lane not in self.handed
        ]

    @property
    def quiet(self) -> bool:
        """No pass runs and no part waits for its lane."""
        return not self.running and not self.handed and not self.whole

    def start(self, lane: int, batch: list[PendingItem], whole: bool) -> None:
        self.running[lane] = batch
        self.whole = whole

    def end(self, lane: int) -> None:
        if self.running.pop(lane, None) is not None and not self.running:
            self.whole = False

    @contextmanager
    def holding_whole(self, changed: threading.Condition) -> Iterator[None]:
        """The whole device for the block (a warm-up), once no pass runs or waits;
        ``changed`` is the batcher's lock, whose waiters are woken at the end."""
        with changed:
            while not self.quiet:
                changed.wait()
            self.whole = True
        try:
            yield
        finally:
            with changed:
                self.whole = False
                changed.notify_all()

    def fair_share(
        self, lane: int, queued: Sequence[int], cost: BatchCost, budget: int
    ) -> int | None:
        """The most a batch for ``lane`` may cost (tokens) where it would otherwise take
        more than its share: an even share of the work outstanding (queued, plus running
        on the other lanes), at least ``MIN_PART_TOKENS``. A lane that took everything
        queued would run one long pass on its core while the other lane, freed a moment
        later, found nothing to do. None (no cap) with one lane, or when no other lane
        runs and the queue fits one batch (``budget``): then ``split_evenly`` shares it."""
        if self.lanes == 1:
            return None
        others = [batch for other, batch in self.running.items() if other != lane]
        waiting = cost.tokens(queued)
        if not others and waiting <= budget:
            return None
        running = sum(cost.tokens([p.length for p in batch]) for batch in others)
        return max(MIN_PART_TOKENS, -(-(waiting + running) // self.lanes))

    def items(self) -> list[PendingItem]:
        """Every item in a pass or handed to a lane."""
        return [p for batch in (*self.running.values(), *self.handed.values()) for p in batch]
