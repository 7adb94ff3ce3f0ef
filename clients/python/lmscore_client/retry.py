"""Retry policy shared by the REST and gRPC clients: bounded attempts and total time,
exponential backoff, and the server's Retry-After honoured when it sends one."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    ``max_attempts`` counts the first try (1 disables retries). Without Retry-After the
    n-th wait is ``backoff_s * 2**(n-1)`` seconds, capped at ``backoff_max_s``, plus up to
    ``jitter`` of itself at random. A wait that would end past ``max_total_s`` seconds
    after the first try is not taken: the last error is raised instead.
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    max_total_s: float = 300.0
    jitter: float = 0.1
    retry_statuses: frozenset[int] = RETRY_STATUSES
    retry_connection_errors: bool = True

    def delay_s(self, failed_attempts: int, retry_after_s: float | None) -> float:
        """Seconds to wait after ``failed_attempts`` (>= 1) failures; Retry-After wins."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        base = min(self.backoff_max_s, self.backoff_s * 2 ** (failed_attempts - 1))
        return base * (1.0 + random.uniform(0.0, self.jitter))

    def next_delay_s(
        self, failed_attempts: int, elapsed_s: float, retry_after_s: float | None
    ) -> float | None:
        """The wait before the next attempt, or None when the budget is spent."""
        if failed_attempts >= self.max_attempts:
            return None
        delay = self.delay_s(failed_attempts, retry_after_s)
        if elapsed_s + delay > self.max_total_s:
            return None
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
