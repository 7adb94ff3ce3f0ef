"""Shared pieces of the fake backends used by batcher, pass-through and drain tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from service.backends.base import BackendInfo, ForwardItem, ForwardResult


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
