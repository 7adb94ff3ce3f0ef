"""A forward pass's position scores, split back into one result per window."""

from __future__ import annotations

import dataclasses

import numpy as np

from service.backends.base import ForwardItem, ForwardResult
from service.scoring.logprobs import PositionScores


def split_scores(scores: PositionScores, items: list[ForwardItem]) -> list[ForwardResult]:
    """Each item's share of a batch's position scores (in the batch's order; an item with
    ``next_token`` owns one position more: the distribution after its last token), on the
    host as numpy arrays."""
    logprobs = scores.logprobs.cpu().numpy()
    ranks = scores.ranks.cpu().numpy()
    top_ids = scores.top_ids.cpu().numpy()
    top_lps = scores.top_logprobs.cpu().numpy()
    entropy = None if scores.entropy is None else scores.entropy.cpu().numpy()
    bow = None if scores.bow is None else scores.bow.cpu().numpy()
    full = None if scores.full is None else scores.full.cpu().numpy()
    std = None if scores.logprob_std is None else scores.logprob_std.cpu().numpy()
    results: list[ForwardResult] = []
    offset = 0
    for item in items:
        n, k = item.num_scored, item.top_k
        span = slice(offset, offset + n)
        result = ForwardResult(
            logprobs[span],
            ranks[span].astype(np.int64),
            top_ids[span, :k].astype(np.int64),
            top_lps[span, :k],
        )
        if item.with_stats and entropy is not None and std is not None:
            result = dataclasses.replace(result, entropy=entropy[span], logprob_std=std[span])
        if item.with_full and full is not None:
            result = dataclasses.replace(result, full_logprobs=full[span])
        if item.with_bow and bow is not None:
            result = dataclasses.replace(result, bow=bow[span])
            if item.next_token:
                result = dataclasses.replace(result, next_bow=float(bow[offset + n]))
        offset += n
        if item.next_token:
            result = dataclasses.replace(
                result,
                next_top_ids=top_ids[offset, :k].astype(np.int64),
                next_top_logprobs=top_lps[offset, :k],
            )
            offset += 1
        results.append(result)
    return results
