"""The narrow interfaces inference backends offer the engine.

A backend scores windows of token ids: for each window it returns the float32 logprob
(natural log) of every token from ``score_from`` on, given all tokens before it in the
window, with ranks and top-k alternatives. Tokenization, chat rendering, aggregation and
batching policy live outside backends.

Backends declare how they batch: a ``BatchedBackend`` (padded or ragged layout) is put
behind our dynamic batcher, a ``SelfBatchingBackend`` (vLLM) behind the pass-through; the
backend registry (``service.backends``) does that wrapping, in one place.
"""

from __future__ import annotations

import enum
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
    # Also return each scored position's entropy and deviation of log p (full vocabulary).
    with_stats: bool = False
    # Also return, per scored position (and after the last with ``next_token``), the log of
    # the total probability of beginning-of-word tokens (see ``scoring.words``).
    with_bow: bool = False
    # A token tree instead of a sequence (backends with ``info.token_trees``): token p
    # follows token ``parents[p]`` (-1 for the root, token 0), attends to its ancestors
    # only, sits at position depth(p), and is predicted from its parent's hidden state.
    # Several continuations of one context share the context's computation this way.
    parents: tuple[int, ...] | None = None
    # Also return the whole float32 log-softmax of every scored position (comparing two
    # models); memory grows as positions x vocabulary.
    with_full: bool = False

    @property
    def num_scored(self) -> int:
        return len(self.input_ids) - self.score_from

    @property
    def model_input(self) -> tuple[int, ...]:
        """The tokens a backend has to run through the model. The last token of a sequence
        is attended to by no other token, so its hidden state and keys/values are never
        read unless ``next_token`` asks for the distribution after it: it is left out.
        A token tree runs whole (its leaves are not all at the end)."""
        if self.next_token or self.parents is not None or len(self.input_ids) < 2:
            return self.input_ids
        return self.input_ids[:-1]

    def predecessor(self, p: int) -> int:
        """The token whose hidden state predicts token ``p``."""
        return p - 1 if self.parents is None else self.parents[p]


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
    # With ``with_stats``: entropy of each position's distribution and the standard
    # deviation of log p under it, float32 [n], nats.
    entropy: npt.NDArray[np.float32] | None = None
    logprob_std: npt.NDArray[np.float32] | None = None
    # With ``with_bow``: log B per scored position [n], and after the last token.
    bow: npt.NDArray[np.float32] | None = None
    next_bow: float | None = None
    # With ``with_full``: the log-softmax of every scored position, float32 [n, V].
    full_logprobs: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class BackendInfo:
    """What /v1/models reports about a loaded model."""

    backend: str
    dtype: str
    device: str
    max_context: int
    # Whether the backend sees the full next-token distribution (entropy, Min-K%++);
    # a backend that only returns top-k logprobs (vLLM) does not.
    full_distribution: bool = True
    # Whether ``ForwardItem.parents`` (token trees) is understood.
    token_trees: bool = False
    # Token ids the model can take (rows of its input embedding); None: every id of its
    # tokenizer. A tokenizer may hold added tokens the model has no embedding for.
    vocab_size: int | None = None
    # Whether the decoder layers run compiled (``--compile``), once warm-up has compiled them.
    compiled: bool = False


class BatchLayout(enum.Enum):
    """How a batched backend lays out the windows of one forward pass; the batcher's cost
    model follows from it (``service.batching.cost``)."""

    # One row per window, right-padded to the longest: costs longest x count tokens.
    PADDED = "padded"
    # All windows as one token stream, attention per window: costs the sum of lengths.
    RAGGED = "ragged"


class ModelBackend(Protocol):
    """What every loaded model offers the engine, whoever batches it."""

    @property
    def info(self) -> BackendInfo: ...

    @property
    def tokenizer(self) -> Any: ...

    def bos_id(self) -> int | None:
        """Token id to prepend for ``prepend_bos``: BOS, or EOS if the model has none;
        None if it has neither."""
        ...

    def close(self) -> None:
        """Release the model's resources (processes, memory)."""
        ...


class BatchedBackend(ModelBackend, Protocol):
    """A backend that scores one batch at a time, synchronously; our dynamic batcher forms
    its batches. ``forward`` blocks: call it off the event loop, one batch per lane at a
    time."""

    @property
    def layout(self) -> BatchLayout: ...

    @property
    def lanes(self) -> int:
        """Forward passes that may run side by side, each on an equal share of the device
        (lanes of CPU cores, ``cpu_lanes``); 1 where passes take turns (a GPU)."""
        ...

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        """Score every item; results in the same order. ``lane=None``: the pass may use the
        whole device, nothing runs beside it; a lane in ``range(lanes)``: the pass runs on
        that lane's share, beside passes on the others. Scores do not depend on which."""
        ...

    def warmup(self) -> None:
        """Run a small forward so the first request does not pay for lazy initialisation."""
        ...


class SelfBatchingBackend(ModelBackend, Protocol):
    """A backend with its own scheduler (vLLM): windows go straight in, concurrently."""

    async def score(self, items: list[ForwardItem]) -> list[ForwardResult]:
        """Score every item (results in order); cancelling the caller aborts them."""
        ...

    async def warmup(self) -> None:
        """One small request, so the first caller does not pay for lazy start-up."""
        ...


def bos_or_eos(tokenizer: Any) -> int | None:
    """The token id ``prepend_bos`` puts first: BOS, or EOS if the tokenizer has none (None
    if it has neither)."""
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return None
