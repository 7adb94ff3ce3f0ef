"""The batcher tests' factory: a ``DynamicBatcher`` over a ``FakeBatchedBackend``, closed
(and its backend released) when the test ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from fakes import FakeBatchedBackend

from service.batching.batcher import DynamicBatcher

Make = Callable[..., tuple[DynamicBatcher, FakeBatchedBackend]]


@pytest_asyncio.fixture(loop_scope="session")
async def make() -> AsyncIterator[Make]:
    """``make(backend=None, model="fake", **limits)``: roomy limits and no wait unless
    ``limits`` says otherwise."""
    made: list[tuple[DynamicBatcher, FakeBatchedBackend]] = []

    def factory(
        backend: FakeBatchedBackend | None = None, model: str = "fake", **limits: Any
    ) -> tuple[DynamicBatcher, FakeBatchedBackend]:
        backend = backend or FakeBatchedBackend()
        options = {
            "max_batch_tokens": 100_000,
            "max_batch_size": 64,
            "max_wait_ms": 0,
            "max_queue": 1000,
        } | limits
        batcher = DynamicBatcher(backend, model, **options)
        made.append((batcher, backend))
        return batcher, backend

    yield factory
    for batcher, backend in made:
        backend.release()
        await batcher.close()
