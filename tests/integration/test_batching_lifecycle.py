"""Dynamic batching, overload and graceful shutdown of the real server (embedded model)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from corpus import ENGLISH, GIBBERISH, OTHER
from prometheus_client.parser import text_string_to_metric_families
from server_process import RunningServer, start_server, stop_server
from tolerances import BATCH_INVARIANCE_REL

pytestmark = pytest.mark.integration

TEXTS = ENGLISH + OTHER + GIBBERISH


def metric_sum(url: str, name: str, sample: str) -> float:
    """Sum of a metric's samples named ``sample`` over all label sets."""
    text = httpx.get(f"{url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
            total += sum(s.value for s in family.samples if s.name == sample)
    return total


async def burst(url: str, texts: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/v1/score/text", json={"texts": [t]}) for t in texts)
        )


@pytest.fixture
def burst_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    extra = getattr(request, "param", [])
    server = start_server(["--max-wait-ms", "20", *extra], tmp_path / "log")
    yield server
    stop_server(server)


def test_concurrent_requests_batch_and_match_one_by_one(http: httpx.Client) -> None:
    """float32: 32 concurrent one-text requests equal the same requests one by one."""
    url = str(http.base_url).rstrip("/")
    texts = (TEXTS * 3)[:32]
    sequential = [
        http.post("/v1/score/text", json={"texts": [t]}).json()["results"][0]["sum_logprob"]
        for t in texts
    ]
    batches_before = metric_sum(url, "lmscore_batch_size", "lmscore_batch_size_count")
    responses = asyncio.run(burst(url, texts))
    batches = metric_sum(url, "lmscore_batch_size", "lmscore_batch_size_count") - batches_before
    assert all(r.status_code == 200 for r in responses)
    assert batches < len(texts)  # they were merged
    for alone, response in zip(sequential, responses, strict=True):
        together = response.json()["results"][0]["sum_logprob"]
        assert math.isclose(alone, together, rel_tol=BATCH_INVARIANCE_REL)
    for response in responses:
        assert float(response.headers["x-queue-time-ms"]) >= 0
        assert float(response.headers["x-inference-time-ms"]) > 0


def test_burst_forms_batches(burst_server: RunningServer) -> None:
    texts = (TEXTS * 6)[:64]
    responses = asyncio.run(burst(burst_server.url, texts))
    assert [r.status_code for r in responses] == [200] * 64
    count = metric_sum(burst_server.url, "lmscore_batch_size", "lmscore_batch_size_count")
    total = metric_sum(burst_server.url, "lmscore_batch_size", "lmscore_batch_size_sum")
    assert total == 64  # the warm-up forward bypasses the batcher
    assert total / count > 1.5


@pytest.mark.parametrize(
    "burst_server", [["--max-queue", "2", "--max-batch-size", "2"]], indirect=True
)
def test_overload_gets_429_with_retry_after_and_no_5xx(burst_server: RunningServer) -> None:
    texts = (TEXTS * 6)[:64]
    responses = asyncio.run(burst(burst_server.url, texts))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert codes.count(429) > 0 and codes.count(200) > 0
    for text, response in zip(texts, responses, strict=True):
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "overloaded"
        else:
            assert response.json()["results"][0]["num_tokens"] > 0, text
    rejected = httpx.get(f"{burst_server.url}/metrics").text
    assert 'lmscore_requests_rejected_total{reason="overloaded"}' in rejected


async def burst_then_sigterm(server: RunningServer) -> tuple[list[int], list[int]]:
    """64 requests, SIGTERM once they are in flight, then 16 more during the drain."""
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:

        async def post(text: str) -> int:
            try:
                response = await client.post("/v1/score/text", json={"texts": [text]})
            except httpx.TransportError:
                return -1  # the listener was already closed
            return response.status_code

        first = [asyncio.ensure_future(post(t)) for t in (TEXTS * 12)[:64]]
        # Signal once every request is admitted (in flight or answered), not after a guess.
        await until(client, lambda m: m["inflight"] + sum(f.done() for f in first) >= 64)
        server.process.send_signal(signal.SIGTERM)
        await until(client, lambda m: m["ready"] == 0)
        late = [asyncio.ensure_future(post(t)) for t in TEXTS[:16]]
        return list(await asyncio.gather(*first)), list(await asyncio.gather(*late))


async def until(client: httpx.AsyncClient, holds: Callable[[dict[str, float]], bool]) -> None:
    """Poll ``/metrics`` (``inflight`` scoring requests, ``ready``) until ``holds``; 60 s
    at most."""
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        try:
            text = (await client.get("/metrics")).text
        except httpx.TransportError:  # no longer listening: draining, so not ready
            text = "lmscore_ready 0\nlmscore_inflight_requests 0\n"
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        found = {
            "inflight": samples["lmscore_inflight_requests"],
            "ready": samples["lmscore_ready"],
        }
        if holds(found):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server did not reach the awaited state in 60 s")


# The drain must not meet the grace period or a request's timeout on a slow machine.
@pytest.mark.parametrize(
    "burst_server",
    [["--shutdown-grace-s", "300", "--request-timeout-s", "300"]],
    indirect=True,
)
def test_sigterm_drains_admitted_work_and_exits_zero(burst_server: RunningServer) -> None:
    admitted, late = asyncio.run(burst_then_sigterm(burst_server))
    assert admitted == [200] * len(admitted)
    assert set(late) <= {503, -1}
    assert burst_server.process.wait(timeout=60) == 0
    log = burst_server.log.read_text()
    assert "draining" in log and "Traceback" not in log


async def long_work_then_sigterm(
    server: RunningServer, signals: int
) -> tuple[list[httpx.Response], float]:
    """Far more work than the grace period allows, then SIGTERM ``signals`` times (0.3 s
    apart) once it runs; the answers and the seconds from the first signal to the exit."""
    # 96 long texts, not 24: on a 2-core AMX CPU (bf16, two lanes) a fresh clone's run
    # answered all 24 before the grace period ended, leaving nothing for it to cut.
    text = " ".join(ENGLISH) * 2
    limits = httpx.Limits(max_connections=96)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
        work = [
            asyncio.ensure_future(client.post("/v1/score/text", json={"texts": [text]}))
            for _ in range(96)
        ]
        await asyncio.sleep(1.5)
        signalled = asyncio.get_running_loop().time()
        for _ in range(signals):
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
        responses = list(await asyncio.gather(*work))
        await asyncio.to_thread(server.process.wait, 120)
        return responses, asyncio.get_running_loop().time() - signalled


@pytest.mark.parametrize("signals", [1, 2], ids=["grace-ends", "second-signal"])
@pytest.mark.parametrize("burst_server", [["--shutdown-grace-s", "1"]], indirect=True)
def test_work_left_after_the_grace_period_fails_with_503_and_the_process_exits(
    burst_server: RunningServer, signals: int
) -> None:
    """Past --shutdown-grace-s (or at a second signal) the remaining work fails with the
    contract's 503, never a bare 500 from a cancelled handler, and the process exits
    without waiting for it."""
    responses, exit_s = asyncio.run(long_work_then_sigterm(burst_server, signals))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 503 in codes, codes
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["type"] == "unavailable"
    assert burst_server.process.returncode == 0
    # The grace period is 1 s, uvicorn's own drain is 5 s.
    assert exit_s < 15, exit_s
    assert "Traceback" not in burst_server.log.read_text()


def test_a_signal_while_a_model_loads_stops_the_process(tmp_path: Path) -> None:
    """A download (or a read) that hangs while models load does not keep a stopping
    server alive: the process exited only once the load's thread had finished."""
    with socket.socket() as hub:  # takes the connection and never answers
        hub.bind(("127.0.0.1", 0))
        hub.listen(4)
        env = {
            **os.environ,
            "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}",
            "HF_HUB_ETAG_TIMEOUT": "600",
            "HF_HUB_DOWNLOAD_TIMEOUT": "600",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        exe = Path(sys.executable).with_name("lmscore")
        args = ["serve", "--model", "m=someone/some-model", "--http-port", "0", "--grpc-port", "0"]
        log = (tmp_path / "log").open("w")
        process = subprocess.Popen([str(exe), *args], env=env, stdout=log, stderr=log)
        try:
            hub.settimeout(120)
            connection, _ = hub.accept()  # the load is under way, in its thread
            process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            code = process.wait(timeout=60)
            assert code == 0 and time.monotonic() - sent < 30
            connection.close()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_the_ready_line_shows_at_any_log_level_and_bf16_says_what_it_costs(
    tmp_path: Path,
) -> None:
    """With --log-level warning the ready line (the only place port 0's ports appear) is
    still written, and a model served in bf16 says at start-up that its PPL moves."""
    log = tmp_path / "server.log"
    running = start_server(["--log-level", "warning", "--dtype", "bfloat16"], log)
    try:
        models = httpx.get(running.url + "/v1/models").json()["data"]
        assert [m["dtype"] for m in models] == ["bfloat16"]
    finally:
        assert stop_server(running) == 0
    text = log.read_text()
    assert "scores in bfloat16: PPL moves by up to several percent" in text
    assert " loaded from " not in text  # info lines stay out at this level
