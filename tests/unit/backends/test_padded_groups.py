"""Padded groups (the CUDA path without a varlen kernel): grouping bounds and attention equal
to each window alone (float64 on CPU, against an explicit block-diagonal causal mask)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import torch
from ragged_cases import block_causal_reference

from service.backends import ragged
from service.backends.padded_groups import SLACK, grouped_attention, padded_groups
from service.backends.ragged import RaggedBatch, ragged_attention

CPU = torch.device("cpu")


@pytest.mark.parametrize("seed", range(6))
def test_every_window_in_one_group_and_padding_bounded(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 5, 40, 41, 300]) for _ in range(rng.randint(1, 40))]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    groups = padded_groups(starts, lengths, CPU)
    stream = torch.cat([g.stream for g in groups])
    assert sorted(stream.tolist()) == list(range(sum(lengths)))  # each token exactly once
    for group in groups:
        tokens = len(group.stream)
        assert group.rows * group.width <= max(SLACK * tokens, group.width)
        assert len(group.slots) == tokens and int(group.slots.max()) < group.rows * group.width
        assert len(set(group.slots.tolist())) == tokens


@pytest.mark.parametrize("scale", [None, 0.3])
def test_grouped_attention_equals_each_window_alone(scale: float | None) -> None:
    torch.manual_seed(0)
    lengths = [5, 1, 9, 2, 9, 30, 3]
    total = sum(lengths)
    q = torch.randn(1, 4, total, 8, dtype=torch.float64)
    k, v = (torch.randn(1, 2, total, 8, dtype=torch.float64) for _ in range(2))
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    groups = padded_groups(starts, lengths, CPU)
    assert 1 < len(groups) < len(lengths)
    out = grouped_attention(q, k, v, groups, scale, enable_gqa=True)
    torch.testing.assert_close(
        out, block_causal_reference(q, k, v, lengths, scale=scale), rtol=0, atol=1e-12
    )


def test_a_stream_with_groups_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the batch holds groups (CUDA builds them; here they are added on CPU), the
    attention layer takes them instead of one SDPA call per window."""
    calls: list[int] = []
    real = ragged.grouped_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ragged, "grouped_attention", spy)
    torch.manual_seed(1)
    lengths = [7, 2, 3]
    q = torch.randn(1, 4, sum(lengths), 8, dtype=torch.float64)
    k, v = (torch.randn(1, 2, sum(lengths), 8, dtype=torch.float64) for _ in range(2))
    batch = RaggedBatch.of([[0] * n for n in lengths], CPU)
    assert batch.groups == ()  # CPU keeps one SDPA call per window
    grouped = dataclasses.replace(batch, groups=padded_groups(batch.starts, batch.lengths, CPU))
    out, _ = ragged_attention(torch.nn.Module(), q, k, v, None, **grouped.attention_kwargs())
    assert calls == [len(grouped.groups)]
    torch.testing.assert_close(out, block_causal_reference(q, k, v, lengths), rtol=0, atol=1e-12)
    one = RaggedBatch.of([[0] * 7], CPU)
    one = dataclasses.replace(one, groups=padded_groups(one.starts, one.lengths, CPU))
    ragged_attention(
        torch.nn.Module(), q[:, :, :7], k[:, :, :7], v[:, :, :7], None, **one.attention_kwargs()
    )
    assert calls == [len(grouped.groups)]  # a lone window is one SDPA call anyway
