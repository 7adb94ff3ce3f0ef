"""Fitting torch's thread pool to the CPUs a container may use: the cgroup v1/v2 quota is
read in CPUs, an unlimited quota and an operator's OMP_NUM_THREADS are respected, and the
pool is only ever lowered. And the one thread that runs every CPU model's torch work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from service.backends import cpu_threads
from service.backends.base import ForwardItem
from service.backends.hf import HFBackend


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [("250000 100000", 2.5), ("100000 100000", 1.0), ("max 100000", None), ("50000", 0.5)],
)
def test_cgroup_v2_quota_in_cpus(tmp_path: Path, cpu_max: str, cpus: float | None) -> None:
    write(tmp_path / "cpu.max", cpu_max)
    assert cpu_threads.cgroup_cpu_limit(tmp_path) == cpus


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct", "."])
def test_cgroup_v1_quota_in_cpus(tmp_path: Path, folder: str) -> None:
    write(tmp_path / folder / "cpu.cfs_quota_us", "400000")
    write(tmp_path / folder / "cpu.cfs_period_us", "100000")
    assert cpu_threads.cgroup_cpu_limit(tmp_path) == 4.0
    write(tmp_path / folder / "cpu.cfs_quota_us", "-1")  # unlimited
    assert cpu_threads.cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cpu_threads.cgroup_cpu_limit(tmp_path) is None


def test_usable_cpus_rounds_a_fractional_quota_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    write(tmp_path / "cpu.max", "150000 100000")
    assert cpu_threads.usable_cpus(tmp_path) == 2
    write(tmp_path / "cpu.max", "10000 100000")  # a tenth of a CPU still gets one thread
    assert cpu_threads.usable_cpus(tmp_path) == 1
    write(tmp_path / "cpu.max", "max 100000")  # no quota: the affinity decides
    assert cpu_threads.usable_cpus(tmp_path) == 64
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert cpu_threads.usable_cpus(tmp_path) == 3


@pytest.mark.usefixtures("restore_threads")
def test_fit_threads_lowers_the_pool_to_the_quota(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    write(tmp_path / "cpu.max", "100000 100000")
    assert cpu_threads.fit_threads(environ={}, root=tmp_path) == 1
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("restore_threads")
def test_fit_threads_never_raises_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    torch.set_num_threads(1)
    write(tmp_path / "cpu.max", "800000 100000")
    assert cpu_threads.fit_threads(environ={}, root=tmp_path) == 1


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("name", cpu_threads.THREAD_ENV_VARS)
def test_an_operators_thread_count_is_kept(tmp_path: Path, name: str) -> None:
    torch.set_num_threads(2)
    write(tmp_path / "cpu.max", "100000 100000")
    assert cpu_threads.fit_threads(environ={name: "2"}, root=tmp_path) == 2
    assert torch.get_num_threads() == 2


def test_cgroup_v2_quota_of_the_process_cgroup_or_a_parent(tmp_path: Path) -> None:
    """With the host's cgroup namespace the mount is the whole tree: the quota is found
    under the path /proc/self/cgroup names, and a parent's (a pod's) tighter one wins."""
    membership = tmp_path / "proc-cgroup"
    membership.write_text("0::/kubepods/pod1/container2\n")
    root = tmp_path / "cgroup"
    write(root / "kubepods" / "pod1" / "container2" / "cpu.max", "max 100000")
    assert cpu_threads.cgroup_cpu_limit(root, membership) is None
    write(root / "kubepods" / "pod1" / "cpu.max", "300000 100000")
    assert cpu_threads.cgroup_cpu_limit(root, membership) == 3.0
    write(root / "kubepods" / "pod1" / "container2" / "cpu.max", "150000 100000")
    assert cpu_threads.cgroup_cpu_limit(root, membership) == 1.5


def test_cgroup_v1_quota_under_the_cpu_controllers_path(tmp_path: Path) -> None:
    membership = tmp_path / "proc-cgroup"
    membership.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")  # the host's root: unlimited
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    assert cpu_threads.cgroup_cpu_limit(root, membership) == 2.0


def test_inside_a_container_the_mount_is_its_own_cgroup(tmp_path: Path) -> None:
    membership = tmp_path / "proc-cgroup"
    membership.write_text("0::/\n")  # a private cgroup namespace
    write(tmp_path / "cgroup" / "cpu.max", "400000 100000")
    assert cpu_threads.cgroup_cpu_limit(tmp_path / "cgroup", membership) == 4.0


def test_a_compute_thread_runs_calls_in_order_on_one_thread() -> None:
    compute = cpu_threads.ComputeThread("test-compute")
    ran_on: list[threading.Thread] = []

    def call(value: int) -> int:
        ran_on.append(threading.current_thread())
        return value * 2

    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda v: compute.run(lambda: call(v)), range(20)))
    assert results == [v * 2 for v in range(20)]
    assert len(set(ran_on)) == 1 and ran_on[0].name == "test-compute"
    assert ran_on[0] is not threading.current_thread()


def test_a_compute_thread_raises_the_callers_error_and_keeps_working() -> None:
    compute = cpu_threads.ComputeThread("test-compute-errors")

    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        compute.run(fail)
    assert compute.run(lambda: 7) == 7


def test_a_call_from_the_compute_thread_runs_at_once() -> None:
    """A backend that calls another CPU model from inside its work must not wait on itself."""
    compute = cpu_threads.ComputeThread("test-compute-nested")
    assert compute.run(lambda: compute.run(lambda: "inner")) == "inner"


def test_every_cpu_model_runs_its_forward_passes_on_the_one_compute_thread(
    tiny_model_dir: Path,
) -> None:
    """Two CPU models called from two threads (two batchers' forward threads) run their
    passes on one thread: torch's OpenMP runtime then keeps one worker pool, not one per
    model (two pools made a lone short pass 1.7x slower on two cores, bench/NOTES.md)."""
    models = [HFBackend(tiny_model_dir, dtype="float32", device="cpu") for _ in range(2)]
    ran_on: list[threading.Thread] = []
    for model in models:
        model_forward = model._forward

        def recorded(items: list[ForwardItem], inner: Any = model_forward) -> Any:
            ran_on.append(threading.current_thread())
            return inner(items)

        model._forward = recorded  # type: ignore[method-assign]
    item = ForwardItem((1, 2, 3, 4), 1)
    with ThreadPoolExecutor(2) as callers:
        answers = list(callers.map(lambda model: model.forward([item]), models))
    assert len(answers) == 2 and all(len(a) == 1 for a in answers)
    assert [t.name for t in ran_on] == ["cpu-compute", "cpu-compute"]
    assert ran_on[0] is ran_on[1]
