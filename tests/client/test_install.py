"""Installing ``clients/python`` into an empty virtual environment brings no torch,
transformers or numpy (resolved with ``pip install --dry-run --report``)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
HEAVY = {"torch", "transformers", "numpy"}
NO_INDEX = (
    "No matching distribution",
    "Could not find a version",
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "ProxyError",
)


def test_client_installs_without_torch(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    report = tmp_path / "report.json"
    try:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--no-input",
             "--report", str(report), str(CLIENT)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("pip could not resolve within 300 s (no package index reachable?)")
    if done.returncode != 0:
        if any(marker in done.stderr for marker in NO_INDEX):
            pytest.skip(f"pip cannot resolve here (no package index?): {done.stderr[-300:]}")
        pytest.fail(f"pip install --dry-run failed:\n{done.stderr}")
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "lmscore-client" in names
    assert {"httpx", "grpcio", "protobuf", "tqdm"} <= names
    assert not names & HEAVY, f"the client would pull in {names & HEAVY}"
