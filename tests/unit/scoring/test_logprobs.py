"""logprobs_from_logits / score_hidden_states against a float64 log-softmax reference."""

from __future__ import annotations

import pytest
import torch
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL

from service.scoring.logprobs import PositionScores, logprobs_from_logits, score_hidden_states

V = 257


def _logits(n: int, dtype: torch.dtype, seed: int = 0, scale: float = 8.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, V, generator=gen) * scale).to(dtype)


def _targets(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n,), generator=gen)


def _reference(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_logprobs_match_float64_reference(dtype: torch.dtype) -> None:
    logits = _logits(33, dtype)
    targets = _targets(33)
    scores = logprobs_from_logits(logits, targets, top_k=5)
    ref = _reference(logits)  # the same (rounded) logits, exact in float64
    assert scores.logprobs.dtype == torch.float32
    assert scores.top_logprobs.dtype == torch.float32
    assert scores.ranks.dtype == torch.int64
    assert scores.top_ids.dtype == torch.int64
    expected = ref.gather(-1, targets[:, None]).squeeze(-1)
    # Computed in float32 whatever the input dtype: float32-level error, not bf16-level.
    torch.testing.assert_close(scores.logprobs.double(), expected, rtol=0, atol=2e-5)
    ref_top, ref_ids = torch.topk(ref, 5, dim=-1)
    torch.testing.assert_close(scores.top_logprobs.double(), ref_top, rtol=0, atol=2e-5)
    # Random float32 logits have no ties, so the ids agree exactly.
    if dtype == torch.float32:
        assert torch.equal(scores.top_ids, ref_ids)


def test_logprobs_are_normalised_and_nonpositive() -> None:
    logits = _logits(10, torch.float32)
    scores = logprobs_from_logits(logits, _targets(10), top_k=V)
    assert bool((scores.logprobs <= 0).all())
    total = torch.logsumexp(scores.top_logprobs.double(), dim=-1)
    torch.testing.assert_close(total, torch.zeros(10, dtype=torch.float64), rtol=0, atol=1e-5)


def test_large_logits_do_not_overflow() -> None:
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4]], dtype=torch.float32)
    scores = logprobs_from_logits(logits, torch.tensor([1]), top_k=0)
    expected = float(_reference(logits)[0, 1])
    assert torch.isfinite(scores.logprobs).all()
    assert abs(float(scores.logprobs[0]) - expected) < 1e-5


def test_rank_is_one_for_argmax_and_counts_strictly_greater() -> None:
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 2.5]])
    order = [1, 4, 3, 0, 2]  # ids from highest to lowest logit
    for expected_rank, target in enumerate(order, start=1):
        scores = logprobs_from_logits(logits, torch.tensor([target]), top_k=0)
        assert int(scores.ranks[0]) == expected_rank


def test_rank_with_ties() -> None:
    logits = torch.tensor([[1.0, 5.0, 5.0, 1.0, 0.0, 5.0]])
    cases = {1: 1, 2: 1, 5: 1, 0: 4, 3: 4, 4: 6}
    targets = torch.tensor(list(cases))
    scores = logprobs_from_logits(logits.expand(len(cases), -1), targets, top_k=0)
    assert scores.ranks.tolist() == list(cases.values())
    # Tied logits give bit-identical logprobs.
    assert float(scores.logprobs[0]) == float(scores.logprobs[1]) == float(scores.logprobs[2])


def test_ranks_match_brute_force_count() -> None:
    logits = _logits(40, torch.bfloat16, seed=3, scale=2.0)  # bf16: plenty of ties
    targets = _targets(40, seed=4)
    scores = logprobs_from_logits(logits, targets, top_k=0)
    lf = logits.double()
    brute = (lf > lf.gather(-1, targets[:, None])).sum(-1) + 1
    assert torch.equal(scores.ranks, brute)


def test_top_k_is_sorted_best_first_and_consistent() -> None:
    logits = _logits(12, torch.float32, seed=5)
    scores = logprobs_from_logits(logits, _targets(12), top_k=7)
    assert scores.top_ids.shape == (12, 7)
    assert scores.top_logprobs.shape == (12, 7)
    assert bool((scores.top_logprobs[:, :-1] >= scores.top_logprobs[:, 1:]).all())
    assert torch.equal(scores.top_ids[:, 0], logits.argmax(-1))
    # Each top entry's logprob is that id's logprob.
    ref = _reference(logits)
    torch.testing.assert_close(
        scores.top_logprobs.double(), ref.gather(-1, scores.top_ids), rtol=0, atol=2e-5
    )


def test_top_k_zero_and_larger_than_vocab() -> None:
    logits = _logits(4, torch.float32)
    none = logprobs_from_logits(logits, _targets(4), top_k=0)
    assert none.top_ids.shape == (4, 0) and none.top_logprobs.shape == (4, 0)
    assert none.top_ids.dtype == torch.int64
    small = logprobs_from_logits(logits[:, :3], torch.tensor([0, 1, 2, 0]), top_k=20)
    assert small.top_ids.shape == (4, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_target_equals_top1_bit_for_bit(dtype: torch.dtype) -> None:
    logits = _logits(25, dtype, seed=7)
    targets = logits.float().argmax(-1)
    scores = logprobs_from_logits(logits, targets, top_k=3)
    assert torch.equal(scores.logprobs, scores.top_logprobs[:, 0])
    assert scores.ranks.tolist() == [1] * 25


def _head(hidden_size: int = 16) -> torch.nn.Linear:
    torch.manual_seed(11)
    return torch.nn.Linear(hidden_size, V, bias=False)


def _assert_same(a: PositionScores, b: PositionScores) -> None:
    # Chunked vs whole: the head's matmul runs at other shapes and rounds differently (a batch
    # layout): the contract's batch tolerance.
    rtol, atol = BATCH_INVARIANCE_REL, BATCH_INVARIANCE_ABS
    torch.testing.assert_close(a.logprobs, b.logprobs, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.top_logprobs, b.top_logprobs, rtol=rtol, atol=atol)
    assert torch.equal(a.ranks, b.ranks)
    assert torch.equal(a.top_ids, b.top_ids)


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
def test_chunking_does_not_change_scores(chunk_size: int) -> None:
    head = _head()
    calls: list[int] = []

    def project(h: torch.Tensor) -> torch.Tensor:
        calls.append(h.shape[0])
        return head(h)

    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(20, 16, generator=gen)
    targets = _targets(20)
    with torch.no_grad():
        whole = logprobs_from_logits(head(hidden), targets, top_k=4)
        chunked = score_hidden_states(hidden, targets, project, top_k=4, chunk_size=chunk_size)
    _assert_same(chunked, whole)
    assert sum(calls) == 20
    assert max(calls) <= chunk_size
    assert len(calls) == -(-20 // chunk_size)
    ref = _reference(head(hidden).detach()).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(chunked.logprobs.double(), ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
@pytest.mark.parametrize("top_k", [0, 3])
def test_chunking_with_no_positions(chunk_size: int, top_k: int) -> None:
    head = _head()
    with torch.no_grad():
        out = score_hidden_states(
            torch.zeros(0, 16), torch.zeros(0, dtype=torch.long), head, top_k, chunk_size
        )
    assert out.logprobs.shape == (0,)
    assert out.ranks.shape == (0,)
    assert out.top_ids.shape == (0, top_k)
    assert out.top_logprobs.shape == (0, top_k)


def test_bfloat16_hidden_states_are_scored_in_float32() -> None:
    head = _head()
    head = head.to(torch.bfloat16)
    hidden = torch.randn(9, 16, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    targets = _targets(9)
    with torch.no_grad():
        logits = head(hidden)
        out = score_hidden_states(hidden, targets, head, top_k=2, chunk_size=4)
    assert out.logprobs.dtype == torch.float32
    ref = _reference(logits).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(out.logprobs.double(), ref, rtol=0, atol=2e-5)


def test_mismatched_positions_raise() -> None:
    head = _head()
    with pytest.raises(ValueError):
        score_hidden_states(torch.zeros(3, 16), torch.zeros(2, dtype=torch.long), head, 0)
