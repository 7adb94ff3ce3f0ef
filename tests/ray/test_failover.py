"""A server killed in the middle of a Ray run loses no row: its requests move to the
other server and every row comes back scored as direct API calls score it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray_helpers import SERVER_ARGS
from server_process import RunningServer, start_server
from test_score_dataset import ROWS, assert_matches, requests_served

from lmscore_client.ray import Servers, score_dataset

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]


def kill_when_busy(server: RunningServer, stop: threading.Event, killed: list[float]) -> None:
    """SIGKILL ``server`` once it has answered a few scoring requests (mid-run)."""
    while not stop.is_set():
        try:
            served = requests_served(server)
        except httpx.HTTPError:  # a busy 2-core machine answers /metrics late: ask again
            continue
        if served >= 3:
            server.process.kill()
            killed.append(time.monotonic())
            return
        time.sleep(0.05)


def test_a_server_killed_mid_run_loses_no_row(
    tmp_path: Path,
    servers: list[RunningServer],
    corpus: list[dict[str, Any]],
    reference: dict[str, Any],
) -> None:
    doomed = start_server(SERVER_ARGS, tmp_path / "doomed.log")
    rows = corpus[:600]
    stop = threading.Event()
    killed: list[float] = []
    killer = threading.Thread(target=kill_when_busy, args=(doomed, stop, killed), daemon=True)
    killer.start()
    try:
        target = Servers([doomed.url, servers[1].url])
        ds = ray.data.from_items(rows, override_num_blocks=6)
        scored = score_dataset(ds, target, rows=ROWS, batch_size=50, rows_per_request=8).take_all()
        finished = time.monotonic()
    finally:
        stop.set()
        doomed.process.kill()
        doomed.process.wait()
    assert killed and killed[0] < finished  # it died during the run, not after
    assert_matches(scored, rows, reference)
