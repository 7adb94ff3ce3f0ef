"""Fitting torch's thread pool to the CPUs a container may use: the cgroup v1/v2 quota is
read in CPUs, an unlimited quota and an operator's OMP_NUM_THREADS are respected, and the
pool is only ever lowered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from service.backends import cpu_threads


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
