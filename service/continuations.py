"""Candidate continuations of one context: each one's log-likelihood given the context.

Tokens follow lm-evaluation-harness's ``loglikelihood``: trailing whitespace of the
context moves to the front of each continuation; the context is tokenized alone and each
continuation is the tokens of ``context + continuation`` after the context's own (so the
numbers equal scoring ``context ids + continuation ids`` as one text). An empty context
is the model's BOS (or EOS) token. Where the backend understands token trees, the context
and all continuations are one forward window: the context is computed once and each
continuation attends to it and to itself. Elsewhere each pair is its own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.backends.base import ForwardItem, ForwardResult
from service.errors import InvalidRequest
from service.schemas import (
    ContinuationRequest,
    ContinuationResponse,
    ContinuationResult,
    ContinuationToken,
    Usage,
)
from service.sequences import checked, encode
from service.served import ContinuationOutcome, RequestTiming, ServedModel
from service.token_text import token_pieces

# Tokens of the context decoded before a continuation's, for its first token's text.
CONTEXT_TOKENS = 6


@dataclass(frozen=True)
class EncodedPairs:
    """The context's token ids and each continuation's own token ids; ``alone[i]``: the
    continuation was tokenized on its own (no context, or one merging with it)."""

    context: list[int]
    continuations: list[list[int]]
    alone: list[bool]

    @property
    def num_tokens(self) -> int:
        return len(self.context) + sum(len(c) for c in self.continuations)


def encode_pairs(
    tokenizer: Any,
    context: str,
    continuations: Sequence[str],
    bos_id: int | None,
    prefix: int | None = None,
) -> EncodedPairs:
    """Token ids split at the context boundary as lm-evaluation-harness does: the
    continuation's tokens are those of context + continuation after the context's own.

    Where the two merge across the boundary (``"I like straw"`` + ``"berries"`` gives
    ``" strawberries"``), that split would drop part of the continuation, so the
    continuation is tokenized on its own instead and scored after the context's tokens:
    every character submitted is scored, given exactly the context."""
    spaces = len(context) - len(context.rstrip())
    moved = context[len(context) - spaces :] if spaces else ""
    context = context[: len(context) - spaces]
    context_ids = tokenizer.encode(context, add_special_tokens=False) if context else []
    own: list[list[int]] = []
    alone: list[bool] = []
    for i, text in enumerate(continuations):
        ids = _after_context(tokenizer, context_ids, context + moved + text)
        alone.append(ids is None)
        if ids is None:  # no context, or it merges with the continuation
            ids = _own_tokens(tokenizer, moved + text)
        if not ids:
            raise InvalidRequest(
                "the continuation has no token of its own after the context",
                param=f"continuations[{i}]",
            )
        own.append(ids)
    if prefix is not None:
        return EncodedPairs([prefix, *context_ids], own, alone)
    if context_ids:
        return EncodedPairs(list(context_ids), own, alone)
    if bos_id is None:
        raise InvalidRequest(
            "an empty context needs the model's BOS (or EOS) token to condition on, and the "
            "model has neither a BOS nor an EOS token",
            param="context",
        )
    return EncodedPairs([bos_id], own, alone)


def context_prefix(model: ServedModel, prepend_bos: bool | None) -> int | None:
    """The token put before the context: the model's BOS (or EOS) when asked; unasked,
    the BOS its tokenizer adds to a text by default (lm-evaluation-harness's hf backend
    tokenizes contexts with the tokenizer's defaults); None: nothing."""
    if prepend_bos:
        return model.start_token("prepend_bos", "prepend_bos")
    return model.default_bos if prepend_bos is None else None


def _own_tokens(tokenizer: Any, text: str) -> list[int]:
    """``text`` tokenized alone, less any leading token that holds none of its characters
    (a SentencePiece tokenizer's dummy-prefix ``▁`` before a newline or a byte: a space
    that is not in the text, and would be scored as the continuation's)."""
    (encoded,) = encode(tokenizer, [text])
    sizes = encoded.token_bytes or [end - start for start, end in encoded.offsets]
    lead = 0
    while lead < len(sizes) - 1 and sizes[lead] == 0:
        lead += 1
    return list(encoded.ids[lead:])


def _after_context(tokenizer: Any, context_ids: list[int], whole_text: str) -> list[int] | None:
    """The tokens of ``whole_text`` after ``context_ids``, or None when there is no context
    or the whole text does not start with those tokens (they merge at the boundary)."""
    if not context_ids:
        return None
    whole = tokenizer.encode(whole_text, add_special_tokens=False)
    if whole[: len(context_ids)] != context_ids:
        return None
    return list(whole[len(context_ids) :])


def check_fits(pairs: EncodedPairs, context_window: int) -> None:
    """Each context + continuation must fit the model's context (422 naming it: the
    context where it leaves no room for any continuation token)."""
    if len(pairs.context) >= context_window:
        raise InvalidRequest(
            f"the context's {len(pairs.context)} tokens leave no room for a continuation in "
            f"the model's context of {context_window}",
            param="context",
        )
    for i, ids in enumerate(pairs.continuations):
        if len(pairs.context) + len(ids) > context_window:
            raise InvalidRequest(
                f"{len(pairs.context) + len(ids)} tokens of context and continuation exceed "
                f"the model's context of {context_window}",
                param=f"continuations[{i}]",
            )


def tree_item(pairs: EncodedPairs) -> ForwardItem:
    """One window: the context, then every continuation branching off its last token."""
    ids = list(pairs.context)
    parents = [-1, *range(len(ids) - 1)]
    for continuation in pairs.continuations:
        for j, token in enumerate(continuation):
            parents.append(len(pairs.context) - 1 if j == 0 else len(ids) - 1)
            ids.append(token)
    return ForwardItem(tuple(ids), len(pairs.context), with_ranks=True, parents=tuple(parents))


def pair_items(pairs: EncodedPairs) -> list[ForwardItem]:
    """One window per continuation: context + continuation."""
    start = len(pairs.context)
    return [
        ForwardItem((*pairs.context, *ids), start, with_ranks=True) for ids in pairs.continuations
    ]


def split_results(pairs: EncodedPairs, outputs: list[ForwardResult]) -> list[ForwardResult]:
    """Per-continuation scores, from one tree window or from one window each."""
    if len(outputs) == len(pairs.continuations):
        return outputs
    (tree,) = outputs
    parts: list[ForwardResult] = []
    offset = 0
    for ids in pairs.continuations:
        span = slice(offset, offset + len(ids))
        empty = np.zeros((len(ids), 0))
        parts.append(
            ForwardResult(
                tree.logprobs[span],
                tree.ranks[span],
                empty.astype(np.int64),
                empty.astype(np.float32),
            )
        )
        offset += len(ids)
    return parts


def token_texts(tokenizer: Any, pairs: EncodedPairs) -> list[list[str]]:
    """Each continuation token's text: what it adds after the tokens before it, decoded as
    it was tokenized (after the context's last few tokens, or alone: a dummy prefix is no
    text), so a character split over tokens shows once, whole, on the token completing it,
    and the texts join to the continuation."""
    texts = []
    for ids, alone in zip(pairs.continuations, pairs.alone, strict=True):
        tail = [] if alone else pairs.context[-CONTEXT_TOKENS:]
        texts.append(token_pieces(tokenizer, [*tail, *ids])[len(tail) :])
    return texts


def build_response(
    model: str,
    revision: str,
    texts: Sequence[str],
    pairs: EncodedPairs,
    scores: list[ForwardResult],
    pieces: list[list[str]] | None,
) -> ContinuationResponse:
    """The response; token detail only with each token's text (``pieces``, return_tokens)."""
    results = []
    for k, (text, ids, score) in enumerate(zip(texts, pairs.continuations, scores, strict=True)):
        tokens = None
        if pieces is not None:
            tokens = [
                ContinuationToken(id=t, text=piece, logprob=float(lp), rank=int(rank))
                for t, piece, lp, rank in zip(
                    ids, pieces[k], score.logprobs, score.ranks, strict=True
                )
            ]
        results.append(
            ContinuationResult(
                continuation=text,
                num_tokens=len(ids),
                sum_logprob=float(np.sum(score.logprobs, dtype=np.float64)),
                is_greedy=bool(np.all(score.ranks == 1)),
                tokens=tokens,
            )
        )
    return ContinuationResponse(
        model=model,
        model_revision=revision,
        context_tokens=len(pairs.context),
        results=results,
        usage=Usage(prompt_tokens=pairs.num_tokens),
    )


async def score(
    model: ServedModel, req: ContinuationRequest, deadline: float
) -> ContinuationOutcome:
    """Each continuation of ``req`` scored given its context on ``model``: one tree window
    where the backend takes token trees and it fits the context (its attention mask is
    length^2), else one window per pair."""
    tokenizer, bos = model.backend.tokenizer, model.backend.bos_id()
    prefix = context_prefix(model, req.prepend_bos)
    pairs = await model.prepare(
        encode_pairs, tokenizer, req.context, req.continuations, bos, prefix
    )
    model.check_vocabulary(
        [pairs.context, *pairs.continuations],
        ["context", *(f"continuations[{i}]" for i in range(len(pairs.continuations)))],
    )
    check_fits(pairs, model.context)
    if model.backend.info.token_trees and pairs.num_tokens <= model.context:
        items = [tree_item(pairs)]
    else:
        items = pair_items(pairs)
    scored = await model.scheduler.submit(items, deadline)
    parts = split_results(pairs, [s.result for s in scored])
    scores = [checked(part, f"continuations[{i}]") for i, part in enumerate(parts)]
    pieces = await model.prepare(token_texts, tokenizer, pairs) if req.return_tokens else None
    response = build_response(model.name, model.revision, req.continuations, pairs, scores, pieces)
    return ContinuationOutcome(response, RequestTiming.of(scored))
