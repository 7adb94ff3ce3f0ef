"""The core's request record: one count, one duration, and a rejection reason read from the
error's class, whichever door finishes it."""

from __future__ import annotations

import pytest

from service.errors import (
    InternalError,
    InvalidRequest,
    LMScoreError,
    MalformedRequest,
    NotFound,
    Overloaded,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from service.metrics import REGISTRY
from service.request_metrics import CANCELLED, RequestRecord, rejection_reason


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidRequest("x"), "invalid"),
        (MalformedRequest("x"), "invalid"),
        (NotFound("x"), "invalid"),
        (TooLarge("x"), "invalid"),
        (Unauthorized("x"), "unauthorized"),
        (Overloaded("x"), "overloaded"),
        (Timeout("x"), "timeout"),
        (Unavailable("x"), None),
        (InternalError("x"), None),
        (LMScoreError("x"), None),
    ],
)
def test_rejection_reason_by_error_class(error: LMScoreError, reason: str | None) -> None:
    assert rejection_reason(error) == reason


def test_finish_records_once() -> None:
    labels = {"endpoint": "unit_test", "protocol": "test"}
    before = sample("lmscore_requests_total", code="429", **labels)
    seen = sample("lmscore_request_duration_seconds_count", **labels)
    overloaded = sample("lmscore_requests_rejected_total", reason="overloaded")
    record = RequestRecord("unit_test", "test")
    elapsed = record.finish("429", Overloaded("queue full", retry_after_s=1))
    assert elapsed >= 0
    record.finish("429", Overloaded("again"))
    assert sample("lmscore_requests_total", code="429", **labels) == before + 1
    assert sample("lmscore_request_duration_seconds_count", **labels) == seen + 1
    assert sample("lmscore_requests_rejected_total", reason="overloaded") == overloaded + 1


def test_cancelled_and_successful_calls() -> None:
    labels = {"endpoint": "unit_test_2", "protocol": "test"}
    cancelled = sample("lmscore_requests_rejected_total", reason="cancelled")
    RequestRecord("unit_test_2", "test").finish("499", CANCELLED)
    RequestRecord("unit_test_2", "test").finish("200")
    assert sample("lmscore_requests_rejected_total", reason="cancelled") == cancelled + 1
    assert sample("lmscore_requests_total", code="200", **labels) == 1
