"""Integration fixtures: the real ``lmscore serve`` on the embedded default, over HTTP.

One server process per session (float32, context capped at 1024 so over-context cases
are cheap), started through the console script exactly as a user would, plus a plain
transformers copy of the same weights in this process as the reference.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

READY = re.compile(r"ready http=(\S+) grpc=(\S+)")
CONTEXT = 1024


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    http: str
    grpc: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.http}"


def start_server(args: list[str], log: Path, timeout_s: float = 300.0) -> RunningServer:
    """Start ``lmscore serve ARGS`` and wait for its ready line."""
    exe = Path(sys.executable).with_name("lmscore")
    handle = log.open("w")
    process = subprocess.Popen(
        [str(exe), "serve", "--http-port", "0", "--grpc-port", "0", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = READY.search(log.read_text())
        if match:
            return RunningServer(process, match.group(1), match.group(2), log)
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready in {timeout_s} s:\n{log.read_text()}")


def stop_server(server: RunningServer) -> int:
    server.process.terminate()
    try:
        return server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.models import ModelSpec, resolve
    from service.settings import Settings

    resolved = resolve(ModelSpec("default", "default"), Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    return tokenizer, model
