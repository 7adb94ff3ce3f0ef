"""Building response objects from a sequence and its per-position scores.

All sums are taken in float64 from the float32 logprobs; units are nats unless a name
says bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.schemas import (
    Aggregate,
    MessageScore,
    TextResult,
    TokenScore,
    TopToken,
    WordScore,
)
from service.scoring.aggregates import LN2, summarize, token_weighted
from service.scoring.distribution import min_k_plus_plus, min_k_prob, summarize_entropy
from service.scoring.offsets import utf8_length
from service.scoring.words import group_tokens, word_logprobs
from service.sequences import ScoredSequence, SequenceScores

TokenText = Callable[[int], str]


@dataclass(frozen=True)
class DistributionOptions:
    """Which full-distribution scores a request asked for (see ``scoring.distribution``)."""

    entropy: bool = False
    min_k: bool = False
    min_k_percent: float = 20.0
    words: bool = False


def build_result(
    seq: ScoredSequence,
    scores: SequenceScores,
    *,
    return_tokens: bool,
    top_k: int,
    token_text: TokenText,
    roles: Sequence[str] | None = None,
    score_roles: Sequence[str] = (),
    distribution: DistributionOptions = DistributionOptions(),
) -> TextResult:
    """The result of one text or conversation."""
    positions: list[int] = []
    chars = 0
    nbytes = 0
    for j, counted in enumerate(seq.scored):
        if counted:
            start, end = seq.offsets[j]
            positions.append(j + seq.shift)
            chars += end - start
            if seq.token_bytes is not None:
                nbytes += seq.token_bytes[j]
            else:
                nbytes += utf8_length(seq.text[start:end])
    logprobs = [float(scores.logprobs[p]) for p in positions]
    agg = summarize(logprobs, chars, nbytes)
    result = TextResult(
        num_tokens=len(seq.token_ids),
        num_scored_tokens=agg.num_scored_tokens,
        sum_logprob=agg.sum_logprob,
        mean_nll=agg.mean_nll,
        ppl=agg.ppl,
        bits_per_byte=agg.bits_per_byte,
        bits_per_char=agg.bits_per_char,
        truncated=seq.truncated,
    )
    _add_distribution_scores(result, scores, positions, chars, distribution)
    if return_tokens:
        result.tokens = _tokens(seq, scores, top_k, token_text, distribution.entropy)
    if distribution.words:
        result.words = _words(seq, scores)
    if roles is not None:
        result.messages = _messages(seq, scores, roles, score_roles)
    return result


def _add_distribution_scores(
    result: TextResult,
    scores: SequenceScores,
    positions: list[int],
    chars: int,
    options: DistributionOptions,
) -> None:
    if options.entropy:
        result.mark_asked("mean_entropy", "entropy_bits_per_char")
    if options.min_k:
        result.mark_asked("min_k_logprob", "min_k_plus_plus")
    if scores.entropy is None or scores.logprob_std is None:
        return
    index = np.asarray(positions, dtype=np.int64)
    entropy = scores.entropy[index]
    if options.entropy:
        summary = summarize_entropy(entropy, chars)
        result.mean_entropy = summary.mean_entropy
        result.entropy_bits_per_char = summary.entropy_bits_per_char
    if options.min_k:
        logprobs = scores.logprobs[index]
        result.min_k_logprob = min_k_prob(logprobs, options.min_k_percent)
        result.min_k_plus_plus = min_k_plus_plus(
            logprobs, entropy, scores.logprob_std[index], options.min_k_percent
        )


def _words(seq: ScoredSequence, scores: SequenceScores) -> list[WordScore]:
    """Per-word scores over the tokens that were scored (a truncated text's kept part)."""
    text = seq.text[: seq.offsets[-1][1]] if seq.truncated and seq.offsets else seq.text
    words = group_tokens(text, seq.offsets)
    values = word_logprobs(words, scores.logprobs, scores.bow, seq.shift)
    return [
        WordScore(
            text=text[w.start : w.end],
            start=w.start,
            end=w.end,
            num_tokens=w.end_token - w.first_token,
            logprob=v.plain,
            logprob_corrected=v.corrected,
            surprisal_bits=None if v.corrected is None else -v.corrected / LN2,
        )
        for w, v in zip(words, values, strict=True)
    ]


def _tokens(
    seq: ScoredSequence,
    scores: SequenceScores,
    top_k: int,
    token_text: TokenText,
    show_entropy: bool = False,
) -> list[TokenScore]:
    tokens: list[TokenScore] = []
    is_chat = seq.message_index is not None
    entropy = scores.entropy if show_entropy else None
    for j, token_id in enumerate(seq.token_ids):
        p = j + seq.shift
        start, end = seq.offsets[j]
        has_context = p > 0
        top = None
        if top_k > 0:
            top = (
                [
                    TopToken(id=int(t), text=token_text(int(t)), logprob=float(lp))
                    for t, lp in zip(scores.top_ids[p], scores.top_logprobs[p], strict=True)
                ]
                if has_context
                else None
            )
        tokens.append(
            TokenScore(
                id=int(token_id),
                text=seq.text[start:end],
                start=start,
                end=end,
                logprob=float(scores.logprobs[p]) if has_context else None,
                rank=int(scores.ranks[p]) if has_context else None,
                top=top,
                with_top=top_k > 0,
                message_index=seq.message_index[j] if seq.message_index is not None else None,
                scored=seq.scored[j] if is_chat else None,
                entropy=float(entropy[p]) if has_context and entropy is not None else None,
            )
        )
    return tokens


def _messages(
    seq: ScoredSequence, scores: SequenceScores, roles: Sequence[str], score_roles: Sequence[str]
) -> list[MessageScore]:
    assert seq.message_index is not None
    per_message: list[list[float]] = [[] for _ in roles]
    for j, owner in enumerate(seq.message_index):
        if owner is not None and seq.scored[j]:
            per_message[owner].append(float(scores.logprobs[j + seq.shift]))
    out: list[MessageScore] = []
    for index, (role, lps) in enumerate(zip(roles, per_message, strict=True)):
        agg = summarize(lps, 0, 0)
        out.append(
            MessageScore(
                index=index,
                role=role,
                scored=role in score_roles,
                num_scored_tokens=agg.num_scored_tokens,
                sum_logprob=agg.sum_logprob,
                mean_nll=agg.mean_nll,
                ppl=agg.ppl,
            )
        )
    return out


def aggregate(results: Sequence[TextResult]) -> Aggregate:
    """Token-weighted aggregate over all results."""
    n, total, mean_nll, ppl = token_weighted((r.num_scored_tokens, r.sum_logprob) for r in results)
    return Aggregate(num_scored_tokens=n, sum_logprob=total, mean_nll=mean_nll, ppl=ppl)
