"""What one forward pass is recorded as: the batch metrics and the debug log line."""

from __future__ import annotations

import logging

from service import metrics
from service.batching.cost import BatchCost
from service.batching.pending import PendingItem

log = logging.getLogger("service.batching.batcher")


def record_pass(
    model: str,
    cost: BatchCost,
    batch: list[PendingItem],
    share: int | None,
    started: float,
    elapsed: float,
) -> None:
    """Metrics of a pass over ``batch`` on ``share`` (a lane, or None: the whole device)
    that started at ``started`` (``time.monotonic()``) and took ``elapsed`` seconds."""
    lengths = [p.length for p in batch]
    computed = cost.tokens(lengths)
    metrics.INFERENCE_DURATION.labels(model=model).observe(elapsed)
    metrics.BATCH_SIZE.labels(model=model).observe(len(batch))
    metrics.BATCH_TOKENS.labels(model=model).observe(computed)
    metrics.PADDING_RATIO.labels(model=model).observe(cost.padding_ratio(lengths))
    metrics.TOKENS_SCORED.labels(model=model).inc(sum(p.item.num_scored for p in batch))
    metrics.FORWARD_PASSES.labels(model=model, share="whole" if share is None else "lane").inc()
    queue = metrics.QUEUE_DURATION.labels(model=model)
    for p in batch:
        queue.observe(started - p.enqueued_at)
    log.debug(
        "batch model=%s lane=%s size=%d tokens=%d computed=%d forward_ms=%.1f",
        model,
        "whole" if share is None else share,
        len(batch),
        sum(lengths),
        computed,
        elapsed * 1000,
    )
