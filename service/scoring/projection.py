"""The vocabulary projection as a linear map applied one slice of the vocabulary at a time,
and target logprobs computed that way without ever holding a whole row of logits.

Natural log throughout. A target's logprob is ``(z_t - m) - log(sum_v exp(z_v - m))`` with
``m`` the row's largest logit, as a log-softmax computes it, but the sum is accumulated
over vocabulary slices: each slice of logits is produced by one matmul, reduced to its
maximum and its sum of ``exp`` while it is still in cache, and dropped. On CPUs this is
what makes the head fast: a full ``[rows, vocab]`` float32 tensor does not fit in cache,
so a matmul that writes it and a log-softmax that reads it back run at memory speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# 2048 x 2048 float32 logits (16 MiB) per slice: both dimensions large enough for the
# matmul to run near its peak, the slice small enough to stay in a server CPU's L3.
DEFAULT_ROWS = 2048
DEFAULT_VOCAB_SLICE = 2048


@dataclass(frozen=True)
class VocabProjection:
    """Logits ``hidden @ weight.T + bias``, then optionally multiplied by ``scale`` and
    soft-capped as ``cap * tanh(logits / cap)`` (the elementwise steps some models apply
    after their LM head). ``weight``: [V, H]; ``bias``: [V] or None. ``slice_size``: how
    many vocabulary entries ``sliced_target_logprobs`` projects onto at a time."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float | None = None
    softcap: float | None = None
    slice_size: int = DEFAULT_VOCAB_SLICE

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary, [N, V], in the weights' dtype (float32 when
        soft-capped)."""
        return self.logits(hidden, 0, self.vocab_size)

    def logits(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Logits of vocabulary entries ``[start, stop)``, [N, stop - start]."""
        bias = None if self.bias is None else self.bias[start:stop]
        out = torch.nn.functional.linear(hidden, self.weight[start:stop], bias)
        return scale_and_cap(out, self.scale, self.softcap)


def scale_and_cap(logits: torch.Tensor, scale: float | None, softcap: float | None) -> torch.Tensor:
    """``logits * scale``, then ``softcap * tanh(logits / softcap)`` in float32; each step
    only when set."""
    if scale is not None:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits.float() / softcap) * softcap
    return logits


def sliced_target_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    projection: VocabProjection,
    rows: int = DEFAULT_ROWS,
) -> torch.Tensor:
    """log p(target | prefix) in nats, float32 [N], for final hidden states [N, H] and
    target ids [N]. At most ``rows x projection.slice_size`` logits exist at once,
    whatever N and the vocabulary size are. The reductions run in float32 whatever the
    model dtype."""
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError("hidden and targets disagree on the number of positions")
    parts = [
        _rows_target_logprobs(hidden[i : i + rows], targets[i : i + rows], projection)
        for i in range(0, hidden.shape[0], rows)
    ]
    if not parts:
        return torch.empty(0, dtype=torch.float32, device=hidden.device)
    return torch.cat(parts)


def _rows_target_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, projection: VocabProjection
) -> torch.Tensor:
    target_logit = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    peaks: list[torch.Tensor] = []
    sums: list[torch.Tensor] = []
    for start in range(0, projection.vocab_size, projection.slice_size):
        logits = projection.logits(hidden, start, start + projection.slice_size).float()
        width = logits.shape[1]
        # Gathered from the same matmul output the sum comes from, with no host sync
        # (a boolean index would wait for the device on every slice).
        local = (targets - start).clamp(0, width - 1)
        inside = (targets >= start) & (targets < start + width)
        picked = logits.gather(1, local[:, None]).squeeze(1)
        target_logit = torch.where(inside, picked, target_logit)
        # A slice of -inf logits would give inf - inf; a finite floor keeps its sum at 0.
        peak = logits.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)
        sums.append(logits.sub_(peak).exp_().sum(dim=1))
        peaks.append(peak.squeeze(1))
    slice_peaks = torch.stack(peaks, dim=1)
    top = slice_peaks.amax(dim=1)
    total = (torch.stack(sums, dim=1) * (slice_peaks - top[:, None]).exp()).sum(dim=1)
    return (target_logit - top) - total.log()
