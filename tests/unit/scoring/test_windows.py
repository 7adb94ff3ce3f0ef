"""plan_windows: strided sliding windows, every position scored exactly once."""

from __future__ import annotations

import itertools

import pytest

from service.scoring.windows import Window, plan_windows

GRID = [
    (n, context, stride)
    for n, context in itertools.product(
        [0, 1, 2, 3, 5, 8, 9, 16, 17, 31, 64, 100], [2, 3, 4, 8, 16]
    )
    for stride in sorted({1, 2, context // 2, context - 1})
    if 1 <= stride < context
]


def _check_invariants(windows: list[Window], n: int, context: int, stride: int) -> None:
    scored = [p for w in windows for p in range(w.score_from, w.end)]
    assert sorted(scored) == list(range(1, n)), "each position 1..n-1 exactly once"
    assert len(scored) == len(set(scored))
    for i, w in enumerate(windows):
        assert 0 <= w.begin < w.score_from <= w.end <= max(n, 1)
        assert w.end - w.begin <= context
        if i > 0:
            assert w.score_from - w.begin >= context - stride
            assert w.score_from == windows[i - 1].end, "windows are contiguous in scoring"
            assert w.end - windows[i - 1].end <= stride
    if n > 1:
        assert windows[0] == Window(0, min(n, context), 1)
        assert windows[-1].end == n


@pytest.mark.parametrize(("n", "context", "stride"), GRID)
def test_invariants_over_grid(n: int, context: int, stride: int) -> None:
    _check_invariants(plan_windows(n, context, stride), n, context, stride)


@pytest.mark.parametrize(("n", "context", "stride"), GRID)
def test_window_count_and_full_history(n: int, context: int, stride: int) -> None:
    windows = plan_windows(n, context, stride)
    if n <= context:
        assert len(windows) == (1 if n >= 1 else 0)
        return
    assert len(windows) == 1 + -(-(n - context) // stride)
    # Every window after the first that is not at the start holds a full context.
    for w in windows[1:]:
        assert w.end - w.begin == context or w.begin == 0


def test_no_tokens() -> None:
    assert plan_windows(0, 8, 4) == []


def test_one_token_has_nothing_to_score() -> None:
    (window,) = plan_windows(1, 8, 4)
    assert window.end == 1
    assert window.score_from == window.end  # empty scored range
    assert window.begin < window.score_from


def test_two_tokens() -> None:
    assert plan_windows(2, 8, 4) == [Window(0, 2, 1)]


def test_exactly_the_context() -> None:
    assert plan_windows(8, 8, 3) == [Window(0, 8, 1)]


def test_one_more_than_the_context() -> None:
    assert plan_windows(9, 8, 3) == [Window(0, 8, 1), Window(1, 9, 8)]


def test_known_layout() -> None:
    assert plan_windows(10, 4, 2) == [
        Window(0, 4, 1),
        Window(2, 6, 4),
        Window(4, 8, 6),
        Window(6, 10, 8),
    ]


def test_last_window_is_short_in_advance_not_in_history() -> None:
    windows = plan_windows(11, 4, 3)
    assert windows == [Window(0, 4, 1), Window(3, 7, 4), Window(6, 10, 7), Window(7, 11, 10)]


def test_stride_one_scores_one_token_per_window() -> None:
    windows = plan_windows(6, 3, 1)
    assert [w.end - w.score_from for w in windows] == [2, 1, 1, 1]
    assert all(w.end - w.begin == 3 for w in windows)


@pytest.mark.parametrize("context", [-1, 0, 1])
def test_context_below_two_is_rejected(context: int) -> None:
    with pytest.raises(ValueError, match="context"):
        plan_windows(10, context, 1)


@pytest.mark.parametrize(("context", "stride"), [(4, 0), (4, -1), (4, 4), (4, 5), (2, 2)])
def test_bad_stride_is_rejected(context: int, stride: int) -> None:
    with pytest.raises(ValueError, match="stride"):
        plan_windows(10, context, stride)


def test_bad_stride_is_rejected_even_for_short_inputs() -> None:
    with pytest.raises(ValueError):
        plan_windows(0, 4, 4)
    with pytest.raises(ValueError):
        plan_windows(1, 1, 1)
