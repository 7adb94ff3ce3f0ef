"""Every Prometheus metric of the service, defined once (all prefixed ``lmscore_``).

Durations are seconds. ``text_ppl`` has log-spaced buckets so a drift of the scored
traffic's perplexity shows up on a dashboard.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
REGISTRY.register(GC_COLLECTOR)

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_PPL = tuple(round(2 ** (i / 2), 3) for i in range(0, 41))  # 1 .. 2^20, two buckets per octave
_BATCH_SIZE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

REQUESTS = Counter(
    "lmscore_requests_total",
    "Requests by endpoint, protocol and status code.",
    ["endpoint", "protocol", "code"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "lmscore_request_duration_seconds",
    "Time from admission to response.",
    ["endpoint", "protocol"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
QUEUE_DURATION = Histogram(
    "lmscore_queue_duration_seconds",
    "Time an item waited in the batch queue.",
    ["model"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
INFERENCE_DURATION = Histogram(
    "lmscore_inference_duration_seconds",
    "Time of one batch's forward pass.",
    ["model"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "lmscore_batch_size",
    "Sequences per forward pass.",
    ["model"],
    buckets=_BATCH_SIZE,
    registry=REGISTRY,
)
BATCH_TOKENS = Histogram(
    "lmscore_batch_tokens",
    "Tokens one forward pass computed, as its layout costs them: real tokens for ragged "
    "batches, longest x count for padded ones.",
    ["model"],
    buckets=_BATCH_TOKENS,
    registry=REGISTRY,
)
FORWARD_PASSES = Counter(
    "lmscore_forward_passes_total",
    "Forward passes by the share of the device they ran on: 'whole' (nothing beside it) "
    "or 'lane' (beside passes on the other lanes, e.g. one core each of a small CPU).",
    ["model", "share"],
    registry=REGISTRY,
)
PADDING_RATIO = Histogram(
    "lmscore_padding_ratio",
    "Share of a batch's padded tokens that are padding.",
    ["model"],
    buckets=_RATIO,
    registry=REGISTRY,
)
TOKENS_SCORED = Counter(
    "lmscore_tokens_scored_total",
    "Token positions whose logprob was computed (compute, not returned scores: a chat's "
    "unscored turns and the work of callers that left count too).",
    ["model"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "lmscore_queue_depth",
    "Windows waiting for a forward pass (our batcher), or in the backend's own engine (vLLM).",
    ["model"],
    registry=REGISTRY,
)
QUEUE_CAPACITY = Gauge(
    "lmscore_queue_capacity",
    "Items that may wait per model (--max-queue); more are refused with 429.",
    ["model"],
    registry=REGISTRY,
)
READY = Gauge(
    "lmscore_ready",
    "1 while the server takes work (every model loaded, not draining), else 0.",
    registry=REGISTRY,
)
INFLIGHT = Gauge("lmscore_inflight_requests", "Requests being handled now.", registry=REGISTRY)
REJECTED = Counter(
    "lmscore_requests_rejected_total",
    "Requests or items refused or dropped: overloaded, timeout, cancelled, invalid, unauthorized.",
    ["reason"],
    registry=REGISTRY,
)
ITEMS_DROPPED = Counter(
    "lmscore_batch_items_dropped_total",
    "Queued windows dropped before their forward pass: their caller left, or their deadline passed.",
    ["model", "reason"],
    registry=REGISTRY,
)
BACKEND_ABORTS = Counter(
    "lmscore_backend_aborts_total",
    "Requests aborted inside a self-batching backend (vLLM) because their caller left.",
    ["model"],
    registry=REGISTRY,
)
TEXT_PPL = Histogram(
    "lmscore_text_ppl",
    "Per-text perplexity of scored texts (log-spaced buckets).",
    ["model", "endpoint"],
    buckets=_PPL,
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "lmscore_model_info",
    "A served model (value 1).",
    ["model", "backend", "dtype", "device", "revision"],
    registry=REGISTRY,
)

REJECTION_REASONS = ("overloaded", "timeout", "cancelled", "invalid", "unauthorized")
for _reason in REJECTION_REASONS:
    REJECTED.labels(reason=_reason)


def start_model_series(model: str) -> None:
    """Create a newly served model's series at zero, so dashboards and rate() see 0 after a
    restart, not "no data" until its first request."""
    for per_model in (QUEUE_DURATION, INFERENCE_DURATION, BATCH_SIZE, BATCH_TOKENS,
                      PADDING_RATIO, TOKENS_SCORED, QUEUE_DEPTH, BACKEND_ABORTS):  # fmt: skip
        per_model.labels(model=model)
    for reason in ("expired", "cancelled"):
        ITEMS_DROPPED.labels(model=model, reason=reason)
    for share in ("whole", "lane"):
        FORWARD_PASSES.labels(model=model, share=share)
