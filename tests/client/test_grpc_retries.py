"""``GrpcClient``'s retries follow its ``RetryPolicy`` as the REST client's do: the
statuses in ``retry_statuses`` (a server's refusal mapped to its REST status), connection
failures only with ``retry_connection_errors``, and never its own deadline. An in-process
gRPC server answers from a script; the waits are recorded instead of slept."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from lmscore_client import (
    GrpcClient,
    OverloadedError,
    RequestTimeoutError,
    RetryPolicy,
    UnavailableError,
)
from lmscore_client._pb.lmscore.v1 import scoring_pb2 as pb
from lmscore_client._pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc

# (status code, error type trailer) the server fails a call with; None answers it.
Failure = tuple[grpc.StatusCode, str] | None


class ScriptedScorer(pb_grpc.ScorerServicer):
    """ListModels fails as scripted, then answers; ``delay_s`` before each answer."""

    def __init__(self, *failures: Failure, delay_s: float = 0.0) -> None:
        self.failures = list(failures)
        self.delay_s = delay_s
        self.calls = 0

    def ListModels(self, request: Any, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        self.calls += 1
        time.sleep(self.delay_s)
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            code, error_type = failure
            context.set_trailing_metadata((("lmscore-error-type", error_type),))
            context.abort(code, f"{error_type} happened")
        return pb.ListModelsResponse(object="list", data=[pb.ModelCard(id="default")])


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(scorer: ScriptedScorer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_ScorerServicer_to_server(scorer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


def client(target: str, retry: RetryPolicy, timeout: float = 10.0) -> tuple[GrpcClient, list]:
    made = GrpcClient(target, timeout=timeout, retry=retry)
    waits: list[float] = []
    made._sleep = waits.append
    return made, waits


def test_a_status_in_retry_statuses_is_retried(serve: Any) -> None:
    timeout = (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")  # the server's own: 504
    scorer = ScriptedScorer(timeout)
    grpc_client, waits = client(serve(scorer), RetryPolicy(retry_statuses=frozenset({504})))
    assert [m.id for m in grpc_client.models()] == ["default"]
    assert scorer.calls == 2 and len(waits) == 1

    scorer = ScriptedScorer(timeout)
    grpc_client, waits = client(serve(scorer), RetryPolicy())  # 429 and 503 only
    with pytest.raises(RequestTimeoutError):
        grpc_client.models()
    assert scorer.calls == 1 and waits == []


def test_a_status_left_out_of_retry_statuses_is_not_retried(serve: Any) -> None:
    overloaded = (grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")
    unavailable = (grpc.StatusCode.UNAVAILABLE, "unavailable")
    scorer = ScriptedScorer(overloaded, unavailable)
    grpc_client, waits = client(serve(scorer), RetryPolicy())
    assert grpc_client.models()[0].id == "default"  # 429 then 503, both retried by default
    assert scorer.calls == 3 and len(waits) == 2

    scorer = ScriptedScorer(unavailable)
    grpc_client, waits = client(serve(scorer), RetryPolicy(retry_statuses=frozenset({429})))
    with pytest.raises(UnavailableError):
        grpc_client.models()
    assert scorer.calls == 1 and waits == []
    scorer = ScriptedScorer(overloaded)
    grpc_client, waits = client(serve(scorer), RetryPolicy(max_attempts=1))
    with pytest.raises(OverloadedError):
        grpc_client.models()


def test_connection_failures_follow_retry_connection_errors() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{probe.getsockname()[1]}"
    grpc_client, waits = client(target, RetryPolicy(max_attempts=3))
    with pytest.raises(UnavailableError):
        grpc_client.models()
    assert len(waits) == 2
    grpc_client, waits = client(target, RetryPolicy(max_attempts=3, retry_connection_errors=False))
    with pytest.raises(UnavailableError):
        grpc_client.models()
    assert waits == []


def test_the_clients_own_deadline_is_never_retried(serve: Any) -> None:
    """The server may still be working on it: retrying would only add load, even with 504
    among the retried statuses (504 is the server's timeout, which names itself)."""
    scorer = ScriptedScorer(delay_s=0.5)
    retry = RetryPolicy(retry_statuses=frozenset({429, 503, 504}))
    grpc_client, waits = client(serve(scorer), retry, timeout=0.1)
    with pytest.raises(RequestTimeoutError):
        grpc_client.models()
    assert waits == []
