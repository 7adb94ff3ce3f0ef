"""Shared pieces of the fake backends used by batcher and drain tests."""

from __future__ import annotations

import numpy as np

from service.backends.base import ForwardItem, ForwardResult


def fake_result(item: ForwardItem) -> ForwardResult:
    """Deterministic scores: each scored token's logprob is -id/1000, rank 1, zero top-k."""
    n = item.num_scored
    return ForwardResult(
        np.asarray([-t / 1000 for t in item.input_ids[item.score_from :]], dtype=np.float32),
        np.ones(n, dtype=np.int64),
        np.zeros((n, item.top_k), dtype=np.int64),
        np.zeros((n, item.top_k), dtype=np.float32),
    )
