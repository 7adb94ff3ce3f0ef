"""The benchmark's peers load the model the server serves, from the same ``--model`` value."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    """``bench/peers.py``, imported as the benchmark imports it (``bench`` on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("peers")
    finally:
        sys.path.remove(str(BENCH))


def test_model_dir_takes_the_sources_the_server_takes(
    peers: ModuleType, tiny_model_dir: Path
) -> None:
    """``SOURCE?dtype=...`` is the server's per-model option, not part of the path."""
    assert peers.model_dir(str(tiny_model_dir)) == tiny_model_dir
    assert peers.model_dir(f"{tiny_model_dir}?dtype=bfloat16&max_context=64") == tiny_model_dir
