"""Request metrics, recorded in one place for every door: count, duration, rejections.

A door opens a ``RequestRecord`` when a call arrives and closes it once with the status it
answered in its own protocol (HTTP status ``"429"``, gRPC code ``"RESOURCE_EXHAUSTED"``) and
the error that ended the call, if any. The rejection reason is read from the error's class,
with one table for every door, so REST, gRPC and the OpenAI-compatible routes count alike.
Durations are seconds from the call's arrival to its answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service import metrics
from service.errors import (
    InvalidRequest,
    LMScoreError,
    NotFound,
    Overloaded,
    Timeout,
    TooLarge,
    Unauthorized,
)

CANCELLED = "cancelled"  # the caller left (or cancelled) before its answer

# Error class -> requests_rejected_total{reason}; classes not listed (Unavailable, internal
# faults) are counted by status only, since the caller did nothing to be refused for.
REJECTION_BY_ERROR: dict[type[LMScoreError], str] = {
    InvalidRequest: "invalid",
    NotFound: "invalid",
    TooLarge: "invalid",
    Unauthorized: "unauthorized",
    Overloaded: "overloaded",
    Timeout: "timeout",
}


def rejection_reason(error: LMScoreError) -> str | None:
    """The ``requests_rejected_total`` reason for an error, by its most specific class."""
    for cls in type(error).__mro__:
        if cls in REJECTION_BY_ERROR:
            return REJECTION_BY_ERROR[cls]
    return None


@dataclass
class RequestRecord:
    """One call through a door, from arrival to answer; ``finish`` records it once."""

    endpoint: str
    protocol: str
    started: float = field(default_factory=time.perf_counter)
    finished: bool = False

    def finish(self, code: str, outcome: LMScoreError | str | None = None) -> float:
        """Record the call: ``code`` is the door's own status, ``outcome`` the error that
        ended it, ``CANCELLED`` when the caller left, or None on success. Returns the
        call's duration in seconds. A second call records nothing."""
        elapsed = time.perf_counter() - self.started
        if self.finished:
            return elapsed
        self.finished = True
        labels = {"endpoint": self.endpoint, "protocol": self.protocol}
        metrics.REQUEST_DURATION.labels(**labels).observe(elapsed)
        metrics.REQUESTS.labels(code=code, **labels).inc()
        if outcome == CANCELLED:
            reason: str | None = CANCELLED
        elif isinstance(outcome, LMScoreError):
            reason = rejection_reason(outcome)
        else:
            reason = None
        if reason is not None:
            metrics.REJECTED.labels(reason=reason).inc()
        return elapsed
