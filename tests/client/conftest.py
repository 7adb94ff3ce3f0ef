"""Client tests: fixtures for the real ``lmscore serve`` (float32, small context) and for
running the ``lmscore-client`` CLI as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_process import RunningServer, start_server, stop_server

# Small, so an over-context row is cheap to build; every other row is far shorter.
CONTEXT = 256
CLI = str(Path(sys.executable).with_name("lmscore-client"))


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


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    with path.open("w") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``lmscore-client ARGS`` as a subprocess (stderr is not a terminal: no progress bar)."""
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
