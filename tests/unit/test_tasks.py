"""``service.tasks.on_own_thread``: one-off work on a thread that has ended when it returns."""

from __future__ import annotations

import threading

import pytest

from service.tasks import on_own_thread


async def test_returns_the_result_from_a_named_thread_that_has_ended() -> None:
    ran_on: list[threading.Thread] = []

    def work(a: int, b: int) -> int:
        ran_on.append(threading.current_thread())
        return a + b

    assert await on_own_thread("sum-thread", work, 2, 3) == 5
    (thread,) = ran_on
    assert thread is not threading.current_thread()
    assert thread.name == "sum-thread"
    assert not thread.is_alive()


async def test_an_error_is_raised_in_the_awaiting_task() -> None:
    def fail() -> None:
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        await on_own_thread("failing", fail)


async def test_each_call_gets_a_new_thread() -> None:
    first = await on_own_thread("a", threading.current_thread)
    second = await on_own_thread("b", threading.current_thread)
    assert first is not second and not first.is_alive() and not second.is_alive()
