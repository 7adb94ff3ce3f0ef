"""Ray tests: a local Ray cluster (2 CPUs, no network), two real lmscore servers on the
embedded model (float32), and a corpus of a few thousand short rows with its scores from
direct API calls."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray Data is not installed (pip install 'lmscore-client[ray]')"
)

from ray_helpers import SERVER_ARGS, corpus_rows, direct_scores  # noqa: E402
from server_process import RunningServer, start_server, stop_server  # noqa: E402

# Ray Data logs every operator's metrics at DEBUG: pages of noise around a failure.
logging.getLogger("ray").setLevel(logging.INFO)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    logs = tmp_path_factory.mktemp("ray-servers")
    running = [start_server(SERVER_ARGS, logs / f"server{i}.log") for i in range(2)]
    yield running
    for server in running:
        stop_server(server)


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    return corpus_rows(2100)


@pytest.fixture(scope="session")
def reference(servers: list[RunningServer], corpus: list[dict[str, Any]]) -> dict[str, Any]:
    return direct_scores(servers[0].url, corpus)
