"""Fixtures for the vLLM backend's tests (run in .venv-vllm by `make test-vllm`).

One ``lmscore serve --backend vllm`` for the session (the default dtype, bfloat16 here),
and plain transformers in float32 on the same weights as the reference.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from reference import load_reference
from server_process import RunningServer, start_server, stop_server

pytest.importorskip("vllm")


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = start_server(["--backend", "vllm", "--max-context", "2048"], log, timeout_s=600)
    yield server
    assert stop_server(server) == 0


@pytest.fixture(scope="session")
def http(vllm_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vllm_server.url, timeout=300.0) as client:
        yield client


@pytest.fixture(scope="session")
def reference() -> Any:
    """The embedded model loaded by plain transformers in float32 (from the same cache)."""
    return load_reference()
