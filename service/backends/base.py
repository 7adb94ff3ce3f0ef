"""The narrow interface every inference backend offers the engine.

A backend scores windows of token ids: for each window it returns the float32 logprob
(natural log) of every token from ``score_from`` on, given all tokens before it in the
window, with ranks and top-k alternatives. Tokenization, chat rendering, aggregation and
batching policy live outside backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ForwardItem:
    """One window to run: ``input_ids`` fed to the model, tokens at positions
    ``[score_from, len(input_ids))`` scored (``score_from >= 1``). Ranks are computed only
    with ``with_ranks`` (they cost a pass over the vocabulary); otherwise they are 0."""

    input_ids: tuple[int, ...]
    score_from: int
    top_k: int = 0
    with_ranks: bool = False
    # Also return the top_k tokens after the last position (for one greedy token).
    next_token: bool = False

    @property
    def num_scored(self) -> int:
        return len(self.input_ids) - self.score_from


@dataclass(frozen=True)
class ForwardResult:
    """Scores of one window's scored positions, in order.

    ``logprobs`` float32 [n] (nats); ``ranks`` int64 [n] (1 = argmax);
    ``top_ids`` int64 [n, k] and ``top_logprobs`` float32 [n, k], best first.
    """

    logprobs: npt.NDArray[np.float32]
    ranks: npt.NDArray[np.int64]
    top_ids: npt.NDArray[np.int64]
    top_logprobs: npt.NDArray[np.float32]
    # With ``next_token``: the top_k tokens after the last position [k], best first.
    next_top_ids: npt.NDArray[np.int64] | None = None
    next_top_logprobs: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class BackendInfo:
    """What /v1/models reports about a loaded model."""

    backend: str
    dtype: str
    device: str
    max_context: int


class Backend(Protocol):
    """A loaded model that can score windows. ``forward`` blocks; call it off the event loop."""

    info: BackendInfo
    tokenizer: Any

    def forward(self, items: list[ForwardItem]) -> list[ForwardResult]:
        """Score every item; results in the same order. May be called with one batch at a time."""
        ...

    def warmup(self) -> None:
        """Run a small forward so the first request does not pay for lazy initialisation."""
        ...

    def bos_id(self) -> int:
        """Token id to prepend for ``prepend_bos``: BOS, or EOS if the model has none."""
        ...


def bos_or_eos(tokenizer: Any) -> int:
    """The token id ``prepend_bos`` puts first: BOS, or EOS if the tokenizer has none."""
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the model has neither a BOS nor an EOS token")
