"""Start ``lmscore serve`` as a user would (the console script, free ports) and stop it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The integration server's --max-context: small, so over-context cases are cheap.
CONTEXT = 1024
READY = re.compile(r"ready http=(\S+) grpc=(\S+)")


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
