"""The simplest scheduler: one forward at a time per model, on a dedicated worker thread.

A request's windows are cut into token-budgeted batches and run in turn. Requests from
different callers are not merged (the dynamic batcher does that); they queue for the
model's single worker thread, so forwards never overlap.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from service.backends.base import Backend, ForwardItem, ForwardResult
from service.batching.planner import plan_batches


class SerialScheduler:
    """Runs the windows of each ``submit`` call through ``backend.forward`` in batches."""

    def __init__(self, backend: Backend, max_batch_tokens: int, max_batch_size: int) -> None:
        self._backend = backend
        self._max_tokens = max_batch_tokens
        self._max_size = max_batch_size
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def submit(self, items: list[ForwardItem]) -> list[ForwardResult]:
        """Score ``items``; results in the same order."""
        loop = asyncio.get_running_loop()
        results: list[ForwardResult | None] = [None] * len(items)
        lengths = [len(item.input_ids) for item in items]
        for batch in plan_batches(lengths, self._max_tokens, self._max_size):
            outputs = await loop.run_in_executor(
                self._worker, self._backend.forward, [items[i] for i in batch]
            )
            for index, output in zip(batch, outputs, strict=True):
                results[index] = output
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop the worker thread once running forwards finish."""
        self._worker.shutdown(wait=True, cancel_futures=True)
