"""`make serve`'s address (dry runs of the Makefile): loopback by default, as the contract
says; the HOST variable, else LMSCORE_HOST as `lmscore serve` itself reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def serve_command(*args: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("LMSCORE_HOST", "HOST")}
    done = subprocess.run(
        ["make", "-s", "-n", "-W", ".venv/.lmscore-installed", "serve", *args],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def test_make_serve_listens_where_asked() -> None:
    assert serve_command().endswith("lmscore serve --host 127.0.0.1")
    # LMSCORE_HOST was overridden by the Makefile's own --host 127.0.0.1.
    assert serve_command(LMSCORE_HOST="0.0.0.0").endswith("--host 0.0.0.0")
    assert serve_command("HOST=::1", LMSCORE_HOST="0.0.0.0").endswith("--host ::1")
