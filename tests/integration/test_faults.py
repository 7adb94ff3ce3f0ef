"""Faults on the real server: callers that leave and deadlines that pass drop their queued
work (and it is counted); a SIGKILL mid-job loses nothing once the client's retries and
``score-file --resume`` have run against the restarted server."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from corpus import ENGLISH, OTHER, gibberish
from prometheus_client.parser import text_string_to_metric_families
from server_process import RunningServer, start_server, stop_server
from tolerances import ppl_rel

from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

LONG = " ".join(ENGLISH * 6)  # about 1,000 tokens: slow enough to build a queue, even on a fast CPU
# float32 whatever the CPU: a bf16 matrix unit would finish the queue before deadlines pass.
ONE_AT_A_TIME = [
    *("--max-batch-size", "1", "--max-wait-ms", "0", "--request-timeout-s", "4"),
    *("--dtype", "float32"),
]


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of ``name`` samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One request per forward pass, so a burst queues up; requests time out after 4 s."""
    server = start_server(ONE_AT_A_TIME, tmp_path_factory.mktemp("faults") / "log")
    yield server
    stop_server(server)


def queue_idle(url: str) -> bool:
    return metric(url, "lmscore_queue_depth") == 0 and metric(url, "lmscore_inflight_requests") == 0


async def leave_early(url: str, count: int, after_s: float) -> None:
    """Send ``count`` long requests and walk away after ``after_s`` seconds."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        body = {"texts": [LONG]}
        tasks = [
            asyncio.ensure_future(client.post("/v1/score/text", json=body)) for _ in range(count)
        ]
        await asyncio.sleep(after_s)
        # Leave once the server holds every request (a request never admitted is no 499).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            inflight = await asyncio.to_thread(metric, url, "lmscore_inflight_requests")
            if inflight + sum(t.done() for t in tasks) >= count:
                break
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_callers_that_leave_drop_their_queued_work(slow_server: RunningServer) -> None:
    url = slow_server.url
    dropped = metric(url, "lmscore_batch_items_dropped_total", reason="cancelled")
    left = metric(url, "lmscore_requests_total", code="499")
    forwards = metric(url, "lmscore_batch_size_count")
    asyncio.run(leave_early(url, count=24, after_s=1.0))
    wait_for(lambda: queue_idle(url))
    assert metric(url, "lmscore_batch_items_dropped_total", reason="cancelled") > dropped
    assert metric(url, "lmscore_requests_total", code="499") >= left + 20
    assert metric(url, "lmscore_batch_size_count") - forwards < 24  # not computed for nobody
    assert httpx.post(f"{url}/v1/score/text", json={"texts": ["still here"]}).status_code == 200


async def grpc_burst(address: str, count: int, deadline_s: float) -> list[grpc.StatusCode]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ScorerStub(channel)

        async def call() -> grpc.StatusCode:
            try:
                await stub.ScoreText(pb.ScoreTextRequest(texts=[LONG]), timeout=deadline_s)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        return list(await asyncio.gather(*(call() for _ in range(count))))


def test_expired_deadlines_drop_queued_work(slow_server: RunningServer) -> None:
    url = slow_server.url
    drops = metric(url, "lmscore_batch_items_dropped_total")
    timeouts = metric(url, "lmscore_requests_rejected_total", reason="timeout")
    codes = asyncio.run(grpc_burst(slow_server.grpc, count=24, deadline_s=1.5))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) >= 12
    # REST: the server's --request-timeout-s (4 s) is the deadline; 504, never a 5xx else.
    statuses = asyncio.run(rest_burst(url, count=16))
    assert set(statuses) <= {200, 504} and 504 in statuses
    wait_for(lambda: queue_idle(url))
    assert metric(url, "lmscore_batch_items_dropped_total") >= drops + 12
    assert metric(url, "lmscore_requests_rejected_total", reason="timeout") > timeouts
    assert httpx.post(f"{url}/v1/score/text", json={"texts": ["still here"]}).status_code == 200


async def rest_burst(url: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/score/text", json={"texts": [LONG]}) for _ in range(count))
        )
    return [answer.status_code for answer in answers]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def score_file(rows: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("lmscore-client")
    args = ["score-file", str(rows), "-o", str(out), "--url", url, "--rows-per-request", "4"]
    args += ["--concurrency", "2", "--max-attempts", "4", *extra]
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_and_restart_lose_nothing(tmp_path: Path) -> None:
    texts = [f"{gibberish(i)[:60]} {OTHER[i % len(OTHER)]}" for i in range(240)]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "scored.jsonl"
    port = free_port()
    args = ["--http-port", str(port), "--max-wait-ms", "5", "--dtype", "float32"]
    first = start_server(args, tmp_path / "first.log")
    job = score_file(rows, out, first.url)
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= 40, timeout_s=240)
    assert job.poll() is None, "the job finished before the kill"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    second = start_server(args, tmp_path / "second.log")
    try:
        status = job.wait(timeout=600)
        if status != 0:  # the retries ran out while the server was down: resume
            assert status == 1, job.stdout.read() if job.stdout else ""
            resumed = score_file(rows, out, second.url, "--resume")
            assert resumed.wait(timeout=600) == 0
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        assert [row["id"] for row in scored] == list(range(len(texts)))  # each once, in order
        alone = httpx.post(
            f"{second.url}/v1/score/text", json={"texts": texts[:8]}, timeout=120
        ).json()["results"]
        for row, want in zip(scored, alone, strict=False):
            assert row["ppl"] == pytest.approx(want["ppl"], rel=ppl_rel(want["ppl"]))
    finally:
        stop_server(second)
