"""Backends by name: each entry loads a resolved model directory into a ``Backend``."""

from __future__ import annotations

from collections.abc import Callable

from service.backends.base import Backend
from service.models import ResolvedModel
from service.settings import Settings


def _transformers(model: ResolvedModel, settings: Settings) -> Backend:
    from service.backends.hf import HFBackend

    return HFBackend(
        model.path, dtype=settings.dtype, device=settings.device, max_context=settings.max_context
    )


BACKENDS: dict[str, Callable[[ResolvedModel, Settings], Backend]] = {
    "transformers": _transformers,
}


def load_backend(model: ResolvedModel, settings: Settings) -> Backend:
    """Load ``model`` with the backend ``settings.backend`` names."""
    return BACKENDS[settings.backend](model, settings)
