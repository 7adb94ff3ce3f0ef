"""Helpers shared by the client tests (a module of its own: `from conftest import` is
ambiguous once several test folders have a conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Small, so an over-context row is cheap to build; every other row is far shorter.
CONTEXT = 256
CLI = str(Path(sys.executable).with_name("lmscore-client"))


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
