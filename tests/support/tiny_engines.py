"""Engines and ASGI clients over a model directory, for the unit tests (float32, CPU unless
asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from service.api.rest import create_app
from service.backends import dynamic_batcher
from service.backends.hf import HFBackend
from service.engine import Engine
from service.settings import Settings


def make_engine(
    model_dir: Path,
    *,
    names: Sequence[str] = ("default",),
    device: str = "cpu",
    **overrides: Any,
) -> Engine:
    """A ready engine serving ``model_dir`` under each of ``names`` on ``device`` (Settings
    ``overrides`` apply)."""
    settings = Settings(dtype="float32", device=device, **overrides)
    engine = Engine(settings)
    for name in names:
        backend = HFBackend(
            model_dir,
            dtype="float32",
            device=device,
            max_context=settings.max_context,
            attention=settings.attention,
        )
        engine.registry.add(name, "sha256:test", dynamic_batcher(backend, name, settings))
    engine.registry.ready = True
    return engine


def asgi_client(engine: Engine) -> httpx.AsyncClient:
    """An HTTP client over the REST app of ``engine``, in process."""
    transport = httpx.ASGITransport(app=create_app(engine))
    return httpx.AsyncClient(transport=transport, base_url="http://test")
