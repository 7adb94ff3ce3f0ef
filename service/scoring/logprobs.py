"""Log-probabilities of target tokens from hidden states or logits, always in float32.

Natural log throughout. The vocabulary projection is applied to bounded chunks of
positions so a float32 [positions, vocab] tensor never exists for a whole batch. When only
the targets' logprobs are asked for and the projection is a plain linear map, it is applied
one vocabulary slice at a time instead (``scoring.projection``), which is faster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from service.scoring.aggregates import LOWEST_LOGPROB
from service.scoring.projection import VocabProjection, sliced_target_logprobs

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PositionScores:
    """Scores of N target tokens, one per scored position.

    ``logprobs``: float32 [N], log p(target | prefix) in nats. ``ranks``: int64 [N], 1 for
    the argmax (1 + the number of vocabulary entries with a strictly higher logit).
    ``top_ids``/``top_logprobs``: [N, k] most likely tokens, best first (k may be 0).
    """

    logprobs: torch.Tensor
    ranks: torch.Tensor
    top_ids: torch.Tensor
    top_logprobs: torch.Tensor
    # With ``with_stats``: the entropy of each position's full next-token distribution
    # (-sum p log p, nats) and the standard deviation of log p under p (nats), float32 [N].
    entropy: torch.Tensor | None = None
    logprob_std: torch.Tensor | None = None
    # With a ``bow_mask``: log of the total probability of the tokens in the mask
    # (beginning-of-word tokens), float32 [N], nats.
    bow: torch.Tensor | None = None
    # With ``with_full``: the whole float32 log-softmax [N, V] (for comparing two models).
    full: torch.Tensor | None = None


def distribution_stats(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy ``-sum p log p`` and the standard deviation of ``log p`` under ``p`` (both
    nats) of each row of float32 log-probabilities [N, V]. The deviation is taken around
    the mean in a second pass (``sum p (log p + H)^2``), not as a difference of moments,
    so it keeps its precision when it is small."""
    probs = log_probs.exp()
    # A ruled-out token (p = 0, log p = -inf) adds 0, not 0 * -inf = NaN.
    log_probs = log_probs.clamp_min(LOWEST_LOGPROB)
    entropy = -(probs * log_probs).sum(dim=-1)
    variance = (probs * (log_probs + entropy[:, None]).square()).sum(dim=-1)
    return entropy, variance.clamp_min(0).sqrt()


def logprobs_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    top_k: int,
    with_ranks: bool = True,
    with_stats: bool = False,
    bow_mask: torch.Tensor | None = None,
    with_full: bool = False,
) -> PositionScores:
    """Score ``targets`` [N] under ``logits`` [N, V] (any float dtype), in float32.

    The target's logprob and the top-k values are read from the same float32 log-softmax
    tensor, so a greedy target's logprob equals its top-1 entry exactly. Ranks cost a
    full pass over the vocabulary; without ``with_ranks`` they are left at 0. The
    distribution statistics (entropy, deviation of log p) cost two more passes and are
    computed only ``with_stats``.
    """
    logits32 = logits.float()
    # log_softmax shifts by the row max first, so a large common offset in the logits costs
    # no precision (logits - logsumexp loses up to half an ulp of the largest logit).
    log_probs = torch.log_softmax(logits32, dim=-1)
    target_lp = log_probs.gather(-1, targets[:, None]).squeeze(-1)
    if with_ranks:
        ranks = (log_probs > target_lp[:, None]).sum(dim=-1) + 1
    else:
        ranks = torch.zeros_like(targets)
    if top_k > 0:
        top_lp, top_ids = torch.topk(log_probs, k=min(top_k, log_probs.shape[-1]), dim=-1)
    else:
        top_ids, top_lp = _no_alternatives(log_probs.shape[0], logits.device)
    entropy = std = bow = None
    if with_stats:
        entropy, std = distribution_stats(log_probs)
    if bow_mask is not None:
        bow = torch.logsumexp(log_probs[:, bow_mask], dim=-1)
    full = log_probs if with_full else None
    return PositionScores(target_lp, ranks, top_ids, top_lp, entropy, std, bow, full)


def score_hidden_states(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    project: Projection | VocabProjection,
    top_k: int,
    chunk_size: int = 256,
    with_ranks: bool = True,
    with_stats: bool = False,
    bow_mask: torch.Tensor | None = None,
    with_full: bool = False,
) -> PositionScores:
    """Score ``targets`` [N] from final hidden states [N, H] through ``project`` (to logits).

    Works over ``chunk_size`` positions at a time; peak extra memory is about
    ``chunk_size x vocab`` float32 values, whatever N is. With a ``VocabProjection`` and
    nothing asked beyond the targets' logprobs, the vocabulary is sliced instead (see
    ``scoring.projection``); ranks are then 0 and the top-k empty, as without them here.
    """
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError("hidden and targets disagree on the number of positions")
    only_targets = top_k == 0 and not (with_ranks or with_stats or with_full)
    if isinstance(project, VocabProjection) and only_targets and bow_mask is None:
        logprobs = sliced_target_logprobs(hidden, targets, project)
        no_ids, no_logprobs = _no_alternatives(logprobs.shape[0], hidden.device)
        return PositionScores(logprobs, torch.zeros_like(targets), no_ids, no_logprobs)
    parts = [
        _full_to_host(
            logprobs_from_logits(
                project(hidden[i : i + chunk_size]),
                targets[i : i + chunk_size],
                top_k,
                with_ranks,
                with_stats,
                bow_mask,
                with_full,
            )
        )
        for i in range(0, hidden.shape[0], chunk_size)
    ] or [
        logprobs_from_logits(
            project(hidden[:0]), targets[:0], top_k, with_ranks, with_stats, bow_mask, with_full
        )
    ]
    return PositionScores(
        torch.cat([p.logprobs for p in parts]),
        torch.cat([p.ranks for p in parts]),
        torch.cat([p.top_ids for p in parts]),
        torch.cat([p.top_logprobs for p in parts]),
        _cat([p.entropy for p in parts]),
        _cat([p.logprob_std for p in parts]),
        _cat([p.bow for p in parts]),
        _cat([p.full for p in parts]),
    )


def _full_to_host(scores: PositionScores) -> PositionScores:
    """Whole log-softmax rows moved to host memory chunk by chunk: on a GPU, N x V float32
    rows for a whole batch would not fit beside the model."""
    if scores.full is None or scores.full.device.type == "cpu":
        return scores
    return dataclasses.replace(scores, full=scores.full.cpu())


def _no_alternatives(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty top-k ids (int64 [n, 0]) and logprobs (float32 [n, 0])."""
    ids = torch.empty((n, 0), dtype=torch.long, device=device)
    return ids, torch.empty((n, 0), dtype=torch.float32, device=device)


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [p for p in parts if p is not None]
    return torch.cat(present) if present else None
