"""Fitting token sequences into a model's context: truncation and sliding windows.

Sliding windows follow the strided method of the Hugging Face perplexity guide: every
token is scored exactly once, with as much history as fits in one window, and each
window advances by ``stride`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Positions ``[begin, end)`` of the sequence are fed to the model; the tokens at
    positions ``[score_from, end)`` are scored in this window (``begin < score_from``)."""

    begin: int
    end: int
    score_from: int


def plan_windows(num_tokens: int, context: int, stride: int) -> list[Window]:
    """Windows covering positions 1..num_tokens-1 (position 0 has no context), each scored once.

    ``context`` is the most tokens one window may hold; ``stride`` (1 <= stride < context)
    is how far each window's end advances, so every token after the first window sees
    at least ``context - stride`` tokens of history.
    """
    if context < 2:
        raise ValueError("context must hold at least two tokens")
    if not 1 <= stride < context:
        raise ValueError("stride must be at least 1 and below the context")
    if num_tokens <= 1:
        return [Window(0, num_tokens, num_tokens)] if num_tokens == 1 else []
    end = min(context, num_tokens)
    windows = [Window(0, end, 1)]
    while end < num_tokens:
        new_end = min(end + stride, num_tokens)
        windows.append(Window(max(0, new_end - context), new_end, end))
        end = new_end
    return windows
