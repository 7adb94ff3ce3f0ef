"""Cases shared by the ragged-attention tests on CPU and CUDA: random streams of windows, a
block-diagonal causal reference and a token tree of one context with three continuations."""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from service.backends.base import ForwardItem
from service.backends.ragged import RaggedBatch, ragged_attention


def window_starts(lengths: list[int]) -> list[int]:
    """Where each window of that many tokens starts in a stream laid end to end."""
    return [0, *itertools.accumulate(lengths)][:-1]


def attend(
    batch: RaggedBatch,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    module: torch.nn.Module | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``ragged_attention`` called as a model's attention layer calls it while ``batch``
    runs through the model."""
    with batch.attending():
        return ragged_attention(module or torch.nn.Module(), q, k, v, None, **kwargs)


def random_stream(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """float64 ``q`` ``[1, 4, total, 8]`` and grouped-query ``k``, ``v`` ``[1, 2, total, 8]``
    for windows of ``lengths`` laid end to end."""
    torch.manual_seed(seed)
    q = torch.randn(1, 4, sum(lengths), 8, dtype=torch.float64)
    k, v = (torch.randn(1, 2, sum(lengths), 8, dtype=torch.float64) for _ in range(2))
    return q, k, v


def block_causal_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: list[int],
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention over a whole ``[1, heads, total, dim]`` stream with an explicit
    block-diagonal causal mask (``window``: sliding, tokens back); ``[1, total, heads, dim]``."""
    total = sum(lengths)
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    pos = torch.arange(total)
    mask = (owner[:, None] == owner[None, :]) & (pos[:, None] >= pos[None, :])
    if window is not None:
        mask &= pos[:, None] - pos[None, :] < window
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(1, 2)


def context_tree(tokenizer: Any, with_ranks: bool = False) -> tuple[ForwardItem, list[ForwardItem]]:
    """A context and three continuations as one token-tree window, and as the three
    context + continuation windows it must score like."""
    context = tokenizer.encode("the quick brown fox", add_special_tokens=False)
    branches = [
        tokenizer.encode(t, add_special_tokens=False)
        for t in (" jumps over the lazy dog", " sleeps", " Привет мир 😀")
    ]
    ids, parents = list(context), [-1, *range(len(context) - 1)]
    for branch in branches:
        for j, token in enumerate(branch):
            parents.append(len(context) - 1 if j == 0 else len(ids) - 1)
            ids.append(token)
    tree = ForwardItem(tuple(ids), len(context), with_ranks=with_ranks, parents=tuple(parents))
    linear = [ForwardItem((*context, *b), len(context), with_ranks=with_ranks) for b in branches]
    return tree, linear
