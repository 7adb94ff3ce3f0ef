"""Backends by name. Each entry loads a resolved model and hands back a ready scheduler:
a backend that scores one batch at a time goes behind our dynamic batcher, whose token
budget counts what the backend's layout computes; one that batches by itself (vLLM) goes
behind the pass-through. This is the one place that knows which backend batches how.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.backends.base import BatchedBackend, SelfBatchingBackend
from service.models import ResolvedModel
from service.settings import Settings

if TYPE_CHECKING:
    from service.batching.batcher import DynamicBatcher
    from service.batching.passthrough import PassThroughScheduler
    from service.batching.scheduler import Scheduler


def default_batch_tokens(backend: BatchedBackend) -> int:
    """The token budget per forward when none is configured (in the units of the
    backend's layout). On CPU small batches are fastest (cache-sized matmuls; measured in
    bench/NOTES.md); a GPU wants large ones."""
    return 16384 if backend.info.device.startswith("cuda") else 2048


def dynamic_batcher(backend: BatchedBackend, name: str, settings: Settings) -> DynamicBatcher:
    """``backend`` behind our dynamic batcher, with the limits ``settings`` gives."""
    from service.batching.batcher import DynamicBatcher

    return DynamicBatcher(
        backend,
        name,
        max_batch_tokens=settings.max_batch_tokens or default_batch_tokens(backend),
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        rejoin_wait=settings.rejoin_wait,
    )


def pass_through(
    backend: SelfBatchingBackend, name: str, settings: Settings
) -> PassThroughScheduler:
    """``backend`` (which batches by itself) behind admission control and deadlines."""
    from service.batching.passthrough import PassThroughScheduler

    return PassThroughScheduler(backend, name, max_queue=settings.max_queue)


def _transformers(model: ResolvedModel, settings: Settings) -> Scheduler:
    from service.backends.hf import HFBackend

    backend = HFBackend(
        model.path,
        dtype=settings.dtype,
        device=settings.device,
        max_context=settings.max_context,
        attention=settings.attention,
        compile_layers=settings.compile,
        pack_weights=settings.pack_weights,
        trace_body=settings.trace_body,
        lane_count=settings.cpu_lanes,
    )
    return dynamic_batcher(backend, model.name, settings)


def _vllm(model: ResolvedModel, settings: Settings) -> Scheduler:
    if importlib.util.find_spec("vllm") is None:  # it is imported inside the backend
        raise RuntimeError(
            "--backend vllm needs vLLM: run `make install-vllm`, or use the image built "
            "with `--target vllm`"
        )
    from service.backends.vllm_engine import VLLMBackend

    backend = VLLMBackend(
        model.path,
        name=model.name,
        dtype=settings.dtype,
        device=settings.device,
        max_context=settings.max_context,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        enforce_eager=settings.enforce_eager,
    )
    return pass_through(backend, model.name, settings)


BACKENDS: dict[str, Callable[[ResolvedModel, Settings], Scheduler]] = {
    "transformers": _transformers,
    "vllm": _vllm,
}


def load_scheduler(model: ResolvedModel, settings: Settings) -> Scheduler:
    """Load ``model`` with the backend ``settings.backend`` names, ready to take windows
    (not yet warmed up)."""
    return BACKENDS[settings.backend](model, settings)
