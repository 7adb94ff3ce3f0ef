"""Integration fixtures: the real ``lmscore serve`` on the embedded default, over HTTP.

One server process per session (float32, context capped at 1024 so over-context cases
are cheap), started through the console script exactly as a user would, plus a plain
transformers copy of the same weights in this process as the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from reference import load_reference
from server_process import CONTEXT, RunningServer, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(["--dtype", "float32", "--max-context", str(CONTEXT)], log)
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300.0) as client:
        yield client


@pytest.fixture(scope="session")
def reference() -> Any:
    """The embedded model loaded by plain transformers in float32 (from the same cache)."""
    return load_reference()
