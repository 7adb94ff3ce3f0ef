"""The monitoring files, proven against a real Prometheus (Debian's package): it scrapes a
running lmscore under load, then every PromQL expression of the Grafana dashboard and of
the alert rules runs through Prometheus' HTTP API without error, and the core ones return
data. ``promtool`` checks the rules and the config and runs the alerts' unit tests."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from server_process import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Prometheus is not installed: apt-get install prometheus (`make system-deps`, "
    "which `make test` and CI run as root)",
)
# Grafana's variables, as the dashboard would expand them over this short run.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$model": ".*", "$endpoint": ".*"}
# Panels that must see data after the load (the others may be empty here: a week-old
# offset). The alerts stay quiet under this load, so they only have to run.
MUST_HAVE_DATA = (
    "lmscore_requests_total",
    "lmscore_request_duration_seconds_bucket",
    "lmscore_queue_duration_seconds_bucket",
    "lmscore_inference_duration_seconds_bucket",
    "lmscore_batch_size_sum",
    "lmscore_tokens_scored_total",
    "lmscore_queue_depth",
    "lmscore_requests_rejected_total",
    "lmscore_ready",
    "lmscore_model_info",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "lmscore.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


@needs_prometheus
def test_promtool_checks_rules_config_and_alert_unit_tests() -> None:
    folder = DEPLOY / "prometheus"
    for args in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            [str(PROMTOOL), *args], cwd=folder, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("prom-lmscore") / "server.log"
    running = start_server(["--dtype", "float32", "--max-context", "256"], log)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("Prometheus is not installed: apt-get install prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", folder / "alerts.yml")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [server.http]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(folder / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, folder / "prometheus.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for Prometheus to answer ready; fail with its log if it exits or takes 60 s
    (rather than letting every test fail on a server that never started)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Prometheus exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus not ready in 60 s:\n{log.read_text()}")


def load(server: RunningServer, seconds: float) -> None:
    """Scoring traffic with a few refusals mixed in, for ``seconds``."""
    texts = ["The cat sat on the mat.", "Colourless green ideas sleep furiously.", "Hello!"]
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    deadline = time.monotonic() + seconds

    def one(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while time.monotonic() < deadline:
                client.post("/v1/score/text", json={"texts": texts})
                client.post("/v1/score/chat", json={"conversations": [chat]})
                client.post("/v1/score/text", json={"texts": ["ok", 5]})  # 422
                client.post("/v1/score/text", json={"texts": ["x"], "model": "nope"})  # 404
                index += 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(4)))


def query(prometheus: str, expr: str) -> dict[str, Any]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30)
    body: dict[str, Any] = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body


def test_every_dashboard_and_alert_expression_runs(server: RunningServer, prometheus: str) -> None:
    load(server, seconds=12)
    panels = [expand(e) for e in dashboard_expressions()]
    alerts = alert_expressions()
    assert len(panels) >= 15 and len(alerts) >= 6
    for expr in alerts:  # quiet now, as they should be: each must only run
        query(prometheus, expr)
    deadline = time.monotonic() + 60  # until the last scrapes land (not a fixed sleep)
    while (empty := panels_without_data(prometheus, panels)) and time.monotonic() < deadline:
        time.sleep(1)
    assert empty == [], f"no data for core panels: {empty}"


def panels_without_data(prometheus: str, panels: list[str]) -> list[str]:
    """The core panels' expressions that return nothing yet."""
    empty = []
    for expr in panels:
        metric = re.search(r"lmscore_\w+", expr)
        core = metric is not None and metric.group(0) in MUST_HAVE_DATA
        if core and not query(prometheus, expr)["data"]["result"]:
            empty.append(expr)
    return empty


def test_dashboard_variables_resolve(server: RunningServer, prometheus: str) -> None:
    load(server, seconds=3)
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "lmscore.json").read_text())
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable.get("definition", ""))
        if match is None:
            continue
        metric, label = match.groups()
        deadline = time.monotonic() + 60  # until a scrape has seen it
        while True:
            answer = httpx.get(
                f"{prometheus}/api/v1/label/{label}/values", params={"match[]": metric}
            ).json()
            if answer["data"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert answer["status"] == "success" and answer["data"], variable["name"]
