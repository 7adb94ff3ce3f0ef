"""Padded groups (the CUDA path without a varlen kernel): grouping bounds and attention equal
to each window alone (float64 on CPU, against an explicit block-diagonal causal mask)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from ragged_cases import attend, block_causal_reference, random_stream, window_starts

from service.backends import ragged
from service.backends.padded_groups import (
    CHEAP_WIDTH,
    SLACK,
    WORK_SLACK,
    grouped_attention,
    padded_groups,
)
from service.backends.ragged import RaggedBatch

CPU = torch.device("cpu")


@pytest.mark.parametrize("seed", range(8))
def test_every_window_in_one_group_with_padding_and_attention_work_bounded(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 5, 40, 41, 300, 2049, 4096]) for _ in range(rng.randint(1, 60))]
    groups = padded_groups(window_starts(lengths), lengths, CPU)
    stream = torch.cat([g.stream for g in groups])
    assert sorted(stream.tolist()) == list(range(sum(lengths)))  # each token exactly once
    for group in groups:
        tokens = len(group.stream)
        assert group.rows * group.width <= max(SLACK * tokens, group.width)
        assert len(group.slots) == tokens and int(group.slots.max()) < group.rows * group.width
        assert len(set(group.slots.tolist())) == tokens
        if group.width > CHEAP_WIDTH and group.rows > 1:
            rows = group.slots // group.width
            own = sum(int(n) ** 2 for n in torch.bincount(rows).tolist())
            assert group.rows * group.width**2 <= WORK_SLACK * own


def test_a_long_window_does_not_pay_for_a_row_of_short_ones() -> None:
    """Tokens alone would put 8000 + 1 in one group of 2 x 8000 (twice the long window's
    attention), and 4096 + 2049 x 7 in 8 x 4096 (2.9 times); short rows group among
    themselves."""
    for lengths, want in (
        ([8000, *([1] * 200)], [(1, 8000), (200, 1)]),
        ([4096, *([2049] * 7)], [(1, 4096), (7, 2049)]),
    ):
        groups = padded_groups(window_starts(lengths), lengths, CPU)
        assert [(g.rows, g.width) for g in groups] == want


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("lengths", [[5, 1, 9, 2, 9, 30, 3], [300, 5, 1, 9, 2]])
def test_grouped_attention_equals_each_window_alone(
    scale: float | None, lengths: list[int]
) -> None:
    """Groups of several padded rows, and (300 tokens, over the attention-work bound) a
    group of one window taken as a slice of the stream."""
    q, k, v = random_stream(lengths)
    groups = padded_groups(window_starts(lengths), lengths, CPU)
    assert 1 < len(groups) < len(lengths)
    assert any(g.rows == 1 for g in groups) == (max(lengths) > CHEAP_WIDTH)
    out = grouped_attention(q, k, v, groups, scale, enable_gqa=True)
    torch.testing.assert_close(
        out, block_causal_reference(q, k, v, lengths, scale=scale), rtol=0, atol=1e-12
    )


@pytest.fixture
def grouped_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Padded groups taken on CPU too (on CUDA they are), recording each call's group count."""
    calls: list[int] = []
    real = ragged.grouped_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ragged, "grouped_attention", spy)
    monkeypatch.setattr(ragged, "_groups_pay", lambda query: True)
    return calls


def test_a_stream_takes_groups_where_they_pay(grouped_calls: list[int]) -> None:
    lengths = [7, 2, 3]
    q, k, v = random_stream(lengths, seed=1)
    batch = RaggedBatch.of([[0] * n for n in lengths], CPU)
    out, _ = attend(batch, q, k, v)
    assert grouped_calls == [len(batch.groups)]
    torch.testing.assert_close(out, block_causal_reference(q, k, v, lengths), rtol=0, atol=1e-12)
    one = RaggedBatch.of([[0] * 7], CPU)
    attend(one, q[:, :, :7], k[:, :, :7], v[:, :, :7])
    assert grouped_calls == [len(batch.groups)]  # a lone window is one SDPA call anyway


def test_repeated_heads_in_groups_equal_grouped_query_attention() -> None:
    """The float32 CUDA path repeats key/value heads before grouping (no grouped heads in
    the memory-efficient kernel): head i of 2 serves query heads 2i and 2i + 1."""
    lengths = [5, 1, 9, 2]
    q, k, v = random_stream(lengths, seed=3)
    k4, v4 = ragged._repeat_heads(q, k, v)
    groups = padded_groups(window_starts(lengths), lengths, CPU)
    out = grouped_attention(q, k4, v4, groups, None, enable_gqa=False)
    torch.testing.assert_close(out, block_causal_reference(q, k, v, lengths), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "extra", [{"sliding_window": 3}, {"softcap": 5.0}, {"s_aux": torch.zeros(4)}]
)
def test_sliding_windows_and_score_extras_never_take_groups(
    grouped_calls: list[int], extra: dict[str, Any]
) -> None:
    """Groups run plain causal SDPA: a sliding window, a soft cap or sink logits take the
    per-window path (a sliding window's result is checked against its mask)."""
    lengths = [7, 2, 5]
    q, k, v = random_stream(lengths, seed=1)
    batch = RaggedBatch.of([[0] * n for n in lengths], CPU)
    out, _ = attend(batch, q, k, v, **extra)
    assert grouped_calls == []
    if "sliding_window" in extra:
        want = block_causal_reference(q, k, v, lengths, window=3)
        torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_a_sliding_window_no_window_reaches_past_is_plain_causal(
    grouped_calls: list[int],
) -> None:
    """Windows no longer than the sliding window attend as plain causal sequences, so they
    take the fast paths (groups here) and equal the reference without the sliding mask."""
    lengths = [7, 2, 5]
    q, k, v = random_stream(lengths, seed=1)
    batch = RaggedBatch.of([[0] * n for n in lengths], CPU)
    out, _ = attend(batch, q, k, v, sliding_window=7)
    assert grouped_calls == [len(batch.groups)]
    torch.testing.assert_close(out, block_causal_reference(q, k, v, lengths), rtol=0, atol=1e-12)
