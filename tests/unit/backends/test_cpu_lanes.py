"""CPU lanes: passes side by side on their own threads with their share of torch's threads,
a whole-CPU pass alone with every thread, and the same scores whichever ran a pass."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import batch_invariance_atol

from service.backends import cpu_lanes
from service.backends.base import ForwardItem
from service.backends.cpu_lanes import CpuLanes, auto_lanes
from service.backends.hf import HFBackend


def test_two_lanes_where_torch_runs_two_threads_else_one() -> None:
    assert [auto_lanes(n) for n in (1, 2, 3, 4, 16)] == [1, 2, 1, 1, 1]


def test_configure_asks_for_lanes_within_the_threads() -> None:
    lanes = CpuLanes("test-lanes-size")
    assert lanes.configure(None, threads=2) == 2 and lanes.lane_threads == 1
    assert lanes.configure(3, threads=2) == 2  # at most one lane per thread
    assert lanes.configure(2, threads=8) == 2 and lanes.lane_threads == 4
    assert lanes.configure(1, threads=2) == 1 and lanes.lane_threads == 2


def where_and_how_wide() -> tuple[str, int]:
    return threading.current_thread().name, torch.get_num_threads()


def test_lane_passes_run_on_their_lanes_with_their_share_and_a_whole_pass_gets_all() -> None:
    lanes = CpuLanes("test-lanes-run")
    lanes.configure(2, threads=2)
    assert lanes.run(where_and_how_wide, 0) == ("test-lanes-run", 1)
    assert lanes.run(where_and_how_wide, 1) == ("test-lanes-run-1", 1)
    assert lanes.run(where_and_how_wide, None) == ("test-lanes-run", 2)
    assert lanes.run(where_and_how_wide, 0) == ("test-lanes-run", 1)  # back to its share


def test_one_lane_gives_every_pass_the_whole_cpu() -> None:
    lanes = CpuLanes("test-lanes-one")
    lanes.configure(1, threads=2)
    assert lanes.run(where_and_how_wide, 1) == ("test-lanes-one", 2)


def test_lane_passes_run_side_by_side() -> None:
    lanes = CpuLanes("test-lanes-overlap")
    lanes.configure(2, threads=2)
    both_in = threading.Barrier(2, timeout=10)
    with ThreadPoolExecutor(2) as callers:
        done = list(callers.map(lambda lane: lanes.run(both_in.wait, lane), (0, 1)))
    assert sorted(done) == [0, 1]  # neither waited for the other to finish


def test_nothing_runs_beside_a_whole_pass() -> None:
    lanes = CpuLanes("test-lanes-exclusive")
    lanes.configure(2, threads=2)
    inside: list[int] = []
    most = [0]
    guard = threading.Lock()

    def occupy() -> None:
        with guard:
            inside.append(1)
            most[0] = max(most[0], len(inside))
        time.sleep(0.02)
        with guard:
            inside.pop()

    calls = [None, 0, 1, None, 1, 0, None, None, 0, 1]
    with ThreadPoolExecutor(len(calls)) as callers:
        results = [callers.submit(lanes.run, occupy, lane) for lane in calls]
        for result in results:
            result.result(timeout=10)
    assert most[0] <= 2  # two lane passes at most, and a whole pass alone (checked next)

    seen_beside_whole = []

    def whole() -> None:
        seen_beside_whole.append(len(inside))
        occupy()

    with ThreadPoolExecutor(6) as callers:
        futures = [callers.submit(lanes.run, occupy, k % 2) for k in range(4)]
        futures += [callers.submit(lanes.run, whole, None) for _ in range(2)]
        for future in futures:
            future.result(timeout=10)
    assert seen_beside_whole == [0, 0]


def test_a_call_from_a_lane_runs_at_once() -> None:
    """A model calling another inside its pass must not wait for itself."""
    lanes = CpuLanes("test-lanes-nested")
    lanes.configure(2, threads=2)
    assert lanes.run(lambda: lanes.run(lambda: "inner", None), None) == "inner"
    assert lanes.run(lambda: lanes.run(lambda: "inner", 1), 0) == "inner"


@pytest.fixture
def two_lanes(monkeypatch: pytest.MonkeyPatch) -> CpuLanes:
    """The process's lanes replaced by two lanes of one thread each, whatever this CPU."""
    lanes = CpuLanes("test-lanes-model")
    lanes.configure(2, threads=2)
    monkeypatch.setattr(cpu_lanes, "CPU_LANES", lanes)
    monkeypatch.setattr(CpuLanes, "configure", lambda self, requested, threads=None: 2)
    return lanes


def test_a_models_scores_do_not_depend_on_the_lane(
    two_lanes: CpuLanes, tiny_model_dir: Path
) -> None:
    """float32: the same windows scored on either lane (one thread) and on the whole CPU
    (two threads) agree within the contract's batch tolerance, texts of very different
    lengths in one batch."""
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.lanes == 2
    generator = np.random.default_rng(3)
    items = [
        ForwardItem(tuple(int(t) for t in generator.integers(3, 200, size=n)), 1)
        for n in (3, 170, 12, 64, 2, 95)
    ]
    whole = backend.forward(items, None)
    for lane in (0, 1):
        got = backend.forward(items, lane)
        for want, result in zip(whole, got, strict=True):
            atol = batch_invariance_atol(want.logprobs)
            assert np.max(np.abs(result.logprobs - want.logprobs)) <= atol
