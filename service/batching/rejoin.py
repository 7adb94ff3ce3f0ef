"""How long a batch may wait, right after a forward pass, for the callers that pass answered.

A caller that keeps a fixed number of requests in flight (a scoring pipeline with a
concurrency limit, a benchmark's closed loop) sends its next request as soon as it has an
answer. With no such wait, 32 of them settle into two halves of 16 that take turns: while
one half is in a pass, the other half's answers go out and their next requests queue, and
the moment the pass ends the queue holds only the other half. Each pass then runs half the
texts it could, and on a CPU a pass of 32 short texts costs ~1.2x less per token than two
of 16 (``bench/NOTES.md``).

So after a pass that finished ``k`` requests (their last windows were in it), the next
batch may wait until ``k`` new requests have come in since the pass ended, at most
``share`` times a recent pass's duration. The wait ends as soon as they have, so a lone
caller's next request, which is all that pass answered, never waits; a pass that finished
no request (one large request spread over many passes) is followed by no wait; callers
that do not come back cost the next batch at most that share of a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RejoinWait:
    """The wait after each pass for the requests it finished to be followed by new ones.

    ``share``: the longest wait, as a share of a recent pass's duration (0 never waits).
    Times are ``time.monotonic()`` seconds. Not thread-safe: the batcher calls it under its
    own lock."""

    share: float
    _expected: int = field(default=0, init=False)
    _arrived: int = field(default=0, init=False)
    _ended_at: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        if not (0.0 <= self.share < math.inf):
            raise ValueError(f"share must be finite and >= 0, not {self.share}")

    def pass_ended(self, finished_requests: int, now: float) -> None:
        """A pass that was the last of ``finished_requests`` requests ended at ``now``."""
        self._expected = finished_requests
        self._arrived = 0
        self._ended_at = now

    def request_arrived(self) -> None:
        """A request was submitted (counted towards those expected since the last pass)."""
        self._arrived += 1

    def remaining_s(self, pass_s: float, now: float) -> float:
        """Seconds the next batch may still wait, ``pass_s`` being a recent pass's duration;
        0 once as many requests came in as the last pass finished, or the wait is over."""
        if self._arrived >= self._expected:
            return 0.0
        return max(0.0, self._ended_at + self.share * pass_s - now)
