"""Backends by name: each entry loads a resolved model directory into a ``Backend``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.backends.base import Backend
from service.models import ResolvedModel
from service.settings import Settings


def _transformers(model: ResolvedModel, settings: Settings) -> Backend:
    from service.backends.hf import HFBackend

    return HFBackend(
        model.path, dtype=settings.dtype, device=settings.device, max_context=settings.max_context
    )


def _vllm(model: ResolvedModel, settings: Settings) -> Any:
    try:
        from service.backends.vllm_engine import VLLMBackend
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("--backend vllm needs vLLM: run `make install-vllm`") from exc
    return VLLMBackend(
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


BACKENDS: dict[str, Callable[[ResolvedModel, Settings], Backend]] = {
    "transformers": _transformers,
    "vllm": _vllm,
}


def load_backend(model: ResolvedModel, settings: Settings) -> Backend:
    """Load ``model`` with the backend ``settings.backend`` names."""
    return BACKENDS[settings.backend](model, settings)
