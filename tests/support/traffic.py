"""Mixed traffic for the overload and soak runs: an asyncio driver over loopback HTTP.

Every request is drawn from a fixed menu (texts, chats, continuations, completions,
refused requests, callers that leave early). Each 200 is checked against the same
request's answer computed alone before the run (scores must not depend on the batch:
``rel_tol``); every other status must be the one the menu item expects. Server process
figures (RSS, open file descriptors, threads) come from ``/proc``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Call:
    """One menu item: what to send and which statuses it may get."""

    name: str
    path: str
    body: Any  # JSON, or bytes sent as they are
    expect: frozenset[int]
    leave_after_s: float | None = None  # the caller walks away after this long


def menu(texts: list[str]) -> list[Call]:
    """The mix: scoring calls of every kind, refusals, and callers that leave."""
    ok = frozenset({200, 429})
    chat = [{"role": "user", "content": texts[0][:80]}, {"role": "assistant", "content": texts[1]}]
    calls = [Call(f"text{i}", "/v1/score/text", {"texts": [t]}, ok) for i, t in enumerate(texts)]
    calls += [
        Call("texts2", "/v1/score/text", {"texts": texts[2:4], "return_tokens": True}, ok),
        Call("chat", "/v1/score/chat", {"conversations": [chat]}, ok),
        Call(
            "continuations",
            "/v1/score/continuations",
            {"context": texts[2][:60], "continuations": [" yes", " no, not at all"]},
            ok,
        ),
        Call(
            "completions",
            "/v1/completions",
            {"prompt": texts[3], "max_tokens": 0, "echo": True, "logprobs": 1},
            ok,
        ),
        Call("bad_top_k", "/v1/score/text", {"texts": ["a"], "top_k": 99}, frozenset({422})),
        Call("no_model", "/v1/score/text", {"texts": ["a"], "model": "nope"}, frozenset({404})),
        Call("not_json", "/v1/score/text", b"{not json", frozenset({400})),
        Call("leaves", "/v1/score/text", {"texts": [texts[0] * 4]}, ok, leave_after_s=0.02),
    ]
    return calls


def weights(calls: list[Call]) -> list[float]:
    """Scoring calls most often; each refusal and early leaver about 4% of the traffic."""
    return [1.0 if c.expect == frozenset({200, 429}) and c.leave_after_s is None else 0.6
            for c in calls]  # fmt: skip


def numbers(answer: Any) -> list[float]:
    """Every float of an answer, in order (the checked part of a 200), ids and text left out."""
    if isinstance(answer, dict):
        return [x for k in sorted(answer) if k not in ("id", "created") for x in numbers(answer[k])]
    if isinstance(answer, list):
        return [x for item in answer for x in numbers(item)]
    if isinstance(answer, float):
        return [answer]
    return []


def same_scores(got: Any, want: Any, rel_tol: float) -> bool:
    a, b = numbers(got), numbers(want)
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=rel_tol, abs_tol=rel_tol) for x, y in zip(a, b, strict=True)
    )


@dataclass
class Tally:
    """What a run saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # unexpected status, or a 200 that differs
    transport_errors: list[str] = field(default_factory=list)  # connection reset, refused...
    left: int = 0
    missing_retry_after: int = 0
    latencies_ok_s: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.left + len(self.transport_errors)


async def send(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    if isinstance(call.body, bytes):
        return await client.post(call.path, content=call.body)
    return await client.post(call.path, json=call.body)


async def references(url: str, calls: list[Call]) -> dict[str, Any]:
    """Each scoring call's answer alone, one at a time."""
    out = {}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for call in calls:
            if 200 in call.expect and call.leave_after_s is None:
                answer = await send(client, call)
                answer.raise_for_status()
                out[call.name] = answer.json()
    return out


async def drive(
    url: str,
    calls: list[Call],
    refs: dict[str, Any],
    *,
    total: int,
    concurrency: int,
    rel_tol: float,
    seed: int = 0,
    tally: Tally | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Tally:
    """Send ``total`` requests drawn from ``calls``, ``concurrency`` at a time (counted
    into ``tally`` when given)."""
    tally = tally if tally is not None else Tally()
    rng = random.Random(seed)
    plan = rng.choices(calls, weights=weights(calls), k=total)
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in plan:
        queue.put_nowait(call)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                await one(client, queue.get_nowait(), refs, rel_tol, tally)
                if on_progress is not None:
                    on_progress(tally.sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


async def one(
    client: httpx.AsyncClient, call: Call, refs: dict[str, Any], rel_tol: float, tally: Tally
) -> None:
    started = time.perf_counter()
    request = asyncio.ensure_future(send(client, call))
    if call.leave_after_s is not None:
        done, _ = await asyncio.wait({request}, timeout=call.leave_after_s)
        if not done:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            tally.left += 1
            return
    try:
        answer = await request
    except httpx.TransportError as error:
        tally.transport_errors.append(f"{call.name}: {type(error).__name__}")
        return
    tally.statuses[str(answer.status_code)] += 1
    if answer.status_code not in call.expect:
        tally.wrong.append(f"{call.name}: {answer.status_code} {answer.text[:200]}")
    elif answer.status_code == 429 and int(answer.headers.get("retry-after", "0")) < 1:
        tally.missing_retry_after += 1
    elif answer.status_code == 200:
        tally.latencies_ok_s.append(time.perf_counter() - started)
        if call.name in refs and not same_scores(answer.json(), refs[call.name], rel_tol):
            tally.wrong.append(f"{call.name}: scores differ from the lone answer")


@dataclass(frozen=True)
class ProcessFigures:
    """A process's resident memory (KiB), open file descriptors and threads."""

    rss_kib: int
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> ProcessFigures:
        status = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            status[key] = value.split()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        return cls(int(status["VmRSS"][0]), fds, int(status["Threads"][0]))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
