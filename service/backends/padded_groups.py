"""Attention over a ragged stream as a few right-padded groups of windows (CUDA, where no
varlen kernel takes the stream: float32, or a torch without one).

Per-window SDPA launches a kernel (and a copy) per window per layer. On a GPU a small
model's forward pass is bound by kernel launches, not arithmetic (an H100 was busy ~4 ms of
a ~50 ms forward pass of 32 short texts), so a batch of 32 windows spent most of its time
launching. Here windows of similar length are gathered into right-padded rows
``[rows, heads, width, head_dim]`` and each group takes one causal SDPA call. Causal
attention never lets a real query see the pads after it, so the real tokens' outputs are
those of each window alone. A group at most doubles its windows' tokens (``SLACK``), and
long rows add at most a quarter to their attention work (``WORK_SLACK``): the linear layers
still see no pad at all, attention holds at most twice the stream, and a long window never
pays for a row of short ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SLACK = 2.0
"""A group's rows x width stays within this many times its real tokens."""

WORK_SLACK = 1.25
"""A group's rows x width^2 (attention work) stays within this many times the sum of its
windows' length^2: attention dominates long windows, so little of it may be spent on pads."""

CHEAP_WIDTH = 256
"""Rows up to this wide are not held to the attention-work bound: their attention costs a
GPU less than the launches another group would."""


@dataclass(frozen=True)
class PaddedGroup:
    """Windows attended together: ``rows`` of ``width`` tokens (the longest member), the
    first starting at stream token ``first``. Token ``stream[j]`` of the stream sits at
    ``slots[j]`` of the flattened ``[rows * width]`` rows (both int64 on the model's
    device)."""

    rows: int
    width: int
    first: int
    stream: torch.Tensor
    slots: torch.Tensor

    @property
    def span(self) -> slice:
        """Where a group of one window lies in the stream."""
        return slice(self.first, self.first + self.width)


def padded_groups(
    starts: Sequence[int], lengths: Sequence[int], device: torch.device
) -> tuple[PaddedGroup, ...]:
    """Windows grouped longest first, each group growing while its padded tokens stay
    within ``SLACK`` times its windows' own and (rows wider than ``CHEAP_WIDTH``) its
    attention work within ``WORK_SLACK`` times; every window in exactly one group."""
    members: list[list[int]] = []
    tokens = work = 0
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        group = members[-1] if members else None
        if group is not None:
            rows, width = len(group) + 1, lengths[group[0]]
            cheap = width <= CHEAP_WIDTH or rows * width**2 <= WORK_SLACK * (work + length**2)
            if cheap and rows * width <= SLACK * (tokens + length):
                group.append(index)
                tokens, work = tokens + length, work + length**2
                continue
        members.append([index])
        tokens, work = length, length**2
    return tuple(_group(group, starts, lengths, device) for group in members)


def _group(
    members: list[int], starts: Sequence[int], lengths: Sequence[int], device: torch.device
) -> PaddedGroup:
    width = lengths[members[0]]
    stream = [torch.arange(starts[i], starts[i] + lengths[i]) for i in members]
    slots = [torch.arange(r * width, r * width + lengths[i]) for r, i in enumerate(members)]
    first = starts[members[0]]
    return PaddedGroup(
        len(members), width, first, torch.cat(stream).to(device), torch.cat(slots).to(device)
    )


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    groups: Sequence[PaddedGroup],
    scaling: float | None,
    enable_gqa: bool,
) -> torch.Tensor:
    """Causal attention of each window of a ``[1, heads, total, head_dim]`` stream (key and
    value ``[1, kv_heads, total, head_dim]``), one SDPA call per group; output
    ``[1, total, heads, head_dim]``."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [total, heads, dim]
    out = torch.empty_like(q)
    for group in groups:
        attended = F.scaled_dot_product_attention(
            _rows(q, group),
            _rows(k, group),
            _rows(v, group),
            is_causal=True,
            scale=scaling,
            enable_gqa=enable_gqa,
        )
        _unrows(out, attended, group)
    return out.unsqueeze(0)


def _rows(stream: torch.Tensor, group: PaddedGroup) -> torch.Tensor:
    """The group's windows of a ``[total, heads, dim]`` stream as right-padded (zero) rows
    ``[rows, heads, width, dim]``; a group of one window is a view, not a copy."""
    if group.rows == 1:
        return stream[group.span].unsqueeze(0).transpose(1, 2)
    heads, dim = stream.shape[1:]
    padded = stream.new_zeros(group.rows * group.width, heads, dim)
    padded[group.slots] = stream[group.stream]
    return padded.view(group.rows, group.width, heads, dim).transpose(1, 2)


def _unrows(out: torch.Tensor, attended: torch.Tensor, group: PaddedGroup) -> None:
    """Each window's outputs (``[rows, heads, width, dim]``, pads dropped) back into their
    places in the ``[total, heads, dim]`` stream ``out``."""
    if group.rows == 1:
        out[group.span] = attended[0].transpose(0, 1)
        return
    flat = attended.transpose(1, 2).reshape(group.rows * group.width, *out.shape[1:])
    out[group.stream] = flat[group.slots]
