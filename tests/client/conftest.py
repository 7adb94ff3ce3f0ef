"""Client tests: fixtures for the real ``lmscore serve`` (float32, small context) and for
running the ``lmscore-client`` CLI as a user would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_helpers import CONTEXT
from server_process import RunningServer, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    running = start_server(["--dtype", "float32", "--max-context", str(CONTEXT)], log)
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300.0) as client:
        yield client
