"""Shared-prefix measurement: N continuations of one long context through
/v1/score/continuations (the context computed once) against the same N context +
continuation texts through /v1/score/text (the context computed N times). Seconds per
request (median of ``repeats``) and the ratio."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx


def _median_seconds(url: str, path: str, body: dict[str, Any], repeats: int) -> float:
    times = []
    with httpx.Client(base_url=url, timeout=600) as client:
        client.post(path, json=body).raise_for_status()  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            client.post(path, json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def shared_prefix_row(
    url: str, context: str, continuations: list[str], repeats: int = 5
) -> dict[str, Any]:
    """Both ways of scoring the continuations, timed; and that they agree (nats)."""
    shared_body = {"context": context, "continuations": continuations}
    texts_body = {"texts": [context + c for c in continuations]}
    shared = _median_seconds(url, "/v1/score/continuations", shared_body, repeats)
    separate = _median_seconds(url, "/v1/score/text", texts_body, repeats)
    info = httpx.post(f"{url}/v1/score/continuations", json=shared_body, timeout=600).json()
    return {
        "context_tokens": info["context_tokens"],
        "continuations": len(continuations),
        "continuation_tokens": sum(r["num_tokens"] for r in info["results"]),
        "shared_s": shared,
        "separate_s": separate,
        "speedup": separate / shared,
    }
