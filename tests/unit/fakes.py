"""Shared pieces of the fake backends used by batcher, pass-through and drain tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from service.backends.base import BackendInfo, BatchLayout, ForwardItem, ForwardResult


def fake_result(item: ForwardItem) -> ForwardResult:
    """Deterministic scores: each scored token's logprob is -id/1000, rank 1, zero top-k."""
    n = item.num_scored
    return ForwardResult(
        np.asarray([-t / 1000 for t in item.input_ids[item.score_from :]], dtype=np.float32),
        np.ones(n, dtype=np.int64),
        np.zeros((n, item.top_k), dtype=np.int64),
        np.zeros((n, item.top_k), dtype=np.float32),
    )


class FakeSelfBatchingBackend:
    """A backend that batches by itself (like vLLM), scoring like ``fake_result``.
    ``hold()`` keeps every call waiting until ``release()``; ``on_finish`` runs just before
    a call returns. Records calls, cancellations (aborts), warm-ups and closes."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.info = BackendInfo("fake-engine", "float32", "cpu", 4096)
        self.tokenizer = tokenizer
        self.calls: list[list[ForwardItem]] = []
        self.aborted = 0
        self.warmed = 0
        self.closed = 0
        self.on_finish: Callable[[], None] | None = None
        self.called = asyncio.Event()  # set by the first call
        self._gate = asyncio.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def bos_id(self) -> int:
        return 0 if self.tokenizer is None else int(self.tokenizer.bos_token_id)

    async def score(self, items: list[ForwardItem]) -> list[ForwardResult]:
        self.calls.append(items)
        self.called.set()
        try:
            await self._gate.wait()
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        if self.on_finish is not None:
            self.on_finish()
        return [fake_result(it) for it in items]

    async def warmup(self) -> None:
        self.warmed += 1

    def close(self) -> None:
        self.closed += 1


class FakeBatchedBackend:
    """A backend we batch for (one batch at a time), scoring like ``fake_result``.
    ``hold()`` keeps forward passes waiting (10 s at most) until ``release()``; a batch
    holding token ``fail_on`` raises. Records its batches."""

    layout = BatchLayout.PADDED
    lanes = 1

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        fail_on: int | None = None,
        layout: BatchLayout | None = None,
        max_context: int = 4096,
    ) -> None:
        if layout is not None:
            self.layout = layout
        self.info = BackendInfo("fake", "float32", "cpu", max_context)
        self.tokenizer = tokenizer
        self.batches: list[list[ForwardItem]] = []
        self.fail_on = fail_on
        self._gate = threading.Event()
        self._gate.set()

    @property
    def calls(self) -> int:
        return len(self.batches)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        self.batches.append(list(items))
        self._gate.wait(timeout=10)
        if self.fail_on is not None and any(self.fail_on in it.input_ids for it in items):
            raise RuntimeError("marker token")
        return [fake_result(it) for it in items]

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        pass

    def bos_id(self) -> int:
        return 1 if self.tokenizer is None else int(self.tokenizer.bos_token_id)

    def tags(self) -> set[int]:
        """The first token of every window it ran (tests tag windows by it)."""
        return {it.input_ids[0] for batch in self.batches for it in batch}
