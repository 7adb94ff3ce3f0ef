"""The benchmark's peers: the model the server serves, vLLM's two modes, the choice of peers."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str) -> ModuleType:
    """A module of ``bench/`` imported as the benchmark imports it (``bench`` on the path);
    the path is left as it was (``run`` adds its own entries on import)."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    """``bench/peers.py``, imported as the benchmark imports it."""
    return _bench_module("peers")


def test_model_dir_takes_the_sources_the_server_takes(
    peers: ModuleType, tiny_model_dir: Path
) -> None:
    """``SOURCE?dtype=...`` is the server's per-model option, not part of the path."""
    assert peers.model_dir(str(tiny_model_dir)) == tiny_model_dir
    assert peers.model_dir(f"{tiny_model_dir}?dtype=bfloat16&max_context=64") == tiny_model_dir


def test_the_vllm_peer_runs_vllms_default_mode_unless_eager_is_named(
    peers: ModuleType, tmp_path: Path
) -> None:
    """vLLM compiles by default on CPU; the eager peer is the one that asks not to."""
    corpora = {"short": [[1, 2, 3]], "docs": [list(range(1500))]}
    compiled = peers.vllm_command(tmp_path, "bfloat16", corpora, tmp_path / "p.json")
    eager = peers.vllm_command(tmp_path, "bfloat16", corpora, tmp_path / "p.json", True)
    assert "--enforce-eager" not in compiled
    assert eager == [*compiled, "--enforce-eager"]
    assert compiled[compiled.index("--max-model-len") + 1] == "2048"
    assert peers.vllm_command(tmp_path, "bf16-mixed", {"s": [[1]]}, tmp_path)[5] == "bfloat16"


def test_the_vllm_peer_script_compiles_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = _bench_module("vllm_peer")
    base = ["vllm_peer.py", "--model", "m", "--prompts", "p.json"]
    monkeypatch.setattr(sys, "argv", base)
    assert script.parse_args().enforce_eager is False
    monkeypatch.setattr(sys, "argv", [*base, "--enforce-eager"])
    assert script.parse_args().enforce_eager is True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["naive", "vllm"]),
        (["--peers", "vllm-eager,naive"], ["naive", "vllm-eager"]),
        (["--peer", "vllm", "--peer", "vllm-eager"], ["vllm", "vllm-eager"]),
        (["--no-peers", "--peers", "naive"], []),
    ],
)
def test_peers_chosen_by_default_and_by_name(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: list[str]
) -> None:
    run = _bench_module("run")
    monkeypatch.setattr(sys, "argv", ["run.py", *argv])
    assert run.chosen_peers(run.parse_args()) == expected


def test_an_unknown_peer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _bench_module("run")
    monkeypatch.setattr(sys, "argv", ["run.py", "--peers", "naive,tgi"])
    with pytest.raises(SystemExit, match="tgi"):
        run.chosen_peers(run.parse_args())


def test_ratios_against_both_vllm_modes() -> None:
    report = _bench_module("report")
    summary = {
        "server": {"rows": {"short_1_per_request": {"tokens_per_s": 300.0}}},
        "peers": {
            "vllm": {"short": {"tokens_per_s": 200.0}},
            "vllm-eager": {"short": {"tokens_per_s": 150.0}},
        },
    }
    ratios = report.ratios(summary)
    assert ratios["server_vs_vllm_short"] == pytest.approx(1.5)
    assert ratios["server_vs_vllm_eager_short"] == pytest.approx(2.0)
    assert ratios["server_vs_vllm_docs"] is None
