"""Handing freed heap memory back once the engine has been idle a moment."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable

import pytest

from service import memory
from service.engine import Engine
from service.memory import IdleTrimmer
from service.schemas import TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_trims_only_after_a_quiet_moment() -> None:
    busy, trimmed = [False], []
    trimmer = IdleTrimmer(0.05, lambda: not busy[0], trim=lambda: trimmed.append(1))
    trimmer.idle()
    trimmer.idle()  # a second idle moment restarts the wait; still one trim
    for _ in range(200):  # the trim runs on a thread: wait for it, up to 10 s
        if trimmed:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and no second one follows
    assert trimmed == [1]
    busy[0] = True
    trimmer.idle()
    await asyncio.sleep(0.2)
    assert trimmed == [1]  # work came in before the quiet moment was over


async def test_zero_never_trims() -> None:
    trimmed: list[int] = []
    trimmer = IdleTrimmer(0.0, lambda: True, trim=lambda: trimmed.append(1))
    trimmer.idle()
    await asyncio.sleep(0.05)
    assert not trimmer.enabled and trimmed == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
async def test_the_engine_trims_when_idle(engine_factory: Callable[..., Engine]) -> None:
    engine = engine_factory(memory_trim_after_idle_s=0.05)
    await engine.score_text(TextScoreRequest(texts=["hello world"]))
    for _ in range(100):
        if engine.trimmer.trims:
            break
        await asyncio.sleep(0.02)
    assert engine.trimmer.trims == 1


class FakeGlibc:
    """Records ``mallopt`` calls; glibc's answer is 1 (accepted)."""

    def __init__(self) -> None:
        self.options: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.options.append((param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        return 0


@pytest.fixture
def fake_glibc(monkeypatch: pytest.MonkeyPatch) -> FakeGlibc:
    libc = FakeGlibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    return libc


async def test_a_trimming_server_keeps_freed_memory_while_busy(fake_glibc: FakeGlibc) -> None:
    """Blocks up to 32 MiB from the heap and up to 1 GiB kept free at its top: a forward
    pass's activations are not faulted in afresh on every pass (bench/NOTES.md); two
    arenas, so what is kept is not spread over a heap per thread."""
    trimmer = IdleTrimmer(0.5, lambda: True)
    assert trimmer.keeps_freed_memory
    assert fake_glibc.options == [
        (memory.M_MMAP_THRESHOLD, 32 << 20),
        (memory.M_TRIM_THRESHOLD, 1 << 30),
        (memory.M_ARENA_MAX, 2),
    ]


async def test_a_server_that_never_trims_leaves_the_allocator_alone(fake_glibc: FakeGlibc) -> None:
    """Memory kept while busy is handed back only by the idle trim: without it, glibc's own
    giving back stays."""
    assert not IdleTrimmer(0.0, lambda: True).keeps_freed_memory
    assert not IdleTrimmer(0.5, lambda: True, trim=lambda: None).keeps_freed_memory
    assert fake_glibc.options == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
async def test_glibc_takes_the_settings() -> None:
    assert memory.keep_freed_memory()
