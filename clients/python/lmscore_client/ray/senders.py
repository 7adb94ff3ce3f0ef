"""How a Ray worker sends built requests: to several lmscore servers with failover, or to an
engine embedded in the worker's own process. Both are ``pipeline.Sender``s."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from lmscore_client.build import ApiCall
from lmscore_client.client import AsyncClient
from lmscore_client.errors import (
    ConnectionFailedError,
    LMScoreError,
    OverloadedError,
    RequestTimeoutError,
    UnavailableError,
    from_http,
)
from lmscore_client.grpc_client import GrpcClient
from lmscore_client.results import ScoreResponse
from lmscore_client.retry import NO_RETRY, RetryPolicy

T = TypeVar("T")
# What says "this server cannot take the request now", not "this request is wrong".
_FAILOVER = (ConnectionFailedError, OverloadedError, UnavailableError, RequestTimeoutError)
_GRPC_SCORING = frozenset({"/v1/score/text", "/v1/score/chat"})


class Endpoint(Protocol):
    """One server, sent to without retries (the failover decides what happens next)."""

    name: str

    async def call(self, api_call: ApiCall[T]) -> T: ...

    async def close(self) -> None: ...


class _RestEndpoint:
    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.name = url
        self._client = AsyncClient(url, api_key=api_key, timeout=timeout_s, retry=NO_RETRY)

    async def call(self, api_call: ApiCall[T]) -> T:
        return await self._client.call(api_call)

    async def close(self) -> None:
        await self._client.aclose()


class _GrpcEndpoint:
    """The blocking gRPC client on a worker thread (scoring calls only)."""

    def __init__(self, target: str, api_key: str | None, timeout_s: float) -> None:
        self.name = target
        self._client = GrpcClient(target, api_key=api_key, timeout=timeout_s, retry=NO_RETRY)

    async def call(self, api_call: ApiCall[T]) -> T:
        if api_call.path not in _GRPC_SCORING:
            raise ValueError(f"the gRPC endpoint sends scoring requests only, not {api_call.path}")
        scoring = cast(ApiCall[ScoreResponse], api_call)
        return cast(T, await asyncio.to_thread(self._client.score, scoring))

    async def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class Servers:
    """Running lmscore servers to score on: REST base URLs (``http://host:8000``) or, with
    ``protocol="grpc"``, gRPC targets (``host:50051``).

    With ``resolve_dns`` every host name is replaced by each address it resolves to, so a
    Kubernetes headless Service (``http://lmscore-headless:8000``) becomes one endpoint per
    pod; a plain Service is one endpoint that kube-proxy balances per connection.
    ``timeout_s`` bounds each attempt; ``retry`` bounds the attempts and total time of one
    request across all servers (Retry-After honoured).
    """

    urls: Sequence[str]
    protocol: Literal["http", "grpc"] = "http"
    api_key: str | None = None
    timeout_s: float = 300.0
    resolve_dns: bool = False
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=20))

    def __post_init__(self) -> None:
        # Read $LMSCORE_API_KEY here, where Servers is built (the driver): the workers that
        # send the requests may run on machines whose environment lacks it.
        if self.api_key is None and os.environ.get("LMSCORE_API_KEY"):
            object.__setattr__(self, "api_key", os.environ["LMSCORE_API_KEY"])

    def endpoints(self) -> list[Endpoint]:
        """One endpoint per server (per resolved address with ``resolve_dns``)."""
        if not self.urls:
            raise ValueError("Servers needs at least one URL")
        names = [a for url in self.urls for a in _expand(url, self.protocol, self.resolve_dns)]
        if self.protocol == "grpc":
            return [_GrpcEndpoint(n, self.api_key, self.timeout_s) for n in names]
        return [_RestEndpoint(n, self.api_key, self.timeout_s) for n in names]


def _expand(url: str, protocol: str, resolve_dns: bool) -> list[str]:
    if not resolve_dns:
        return [url]
    parts = urlsplit(url if protocol == "http" else f"grpc://{url}")
    host, port = parts.hostname or "", parts.port
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in infos})
    out = []
    for address in addresses:
        shown = f"[{address}]" if ":" in address else address
        netloc = f"{shown}:{port}" if port else shown
        out.append(urlunsplit(parts._replace(netloc=netloc)) if protocol == "http" else netloc)
    return out


class FailoverSender:
    """Spreads requests over servers (round robin) and moves a request that a server
    cannot take (connection lost, 429, 503) to another one. A server that failed is rested
    for its Retry-After, or the retry policy's backoff (exponential, with jitter); when
    every server rests, the request waits for the first to come back. The policy's attempts
    and total time bound a request. A 504 (the request outlasted a server's deadline) is
    tried on one other server at most. Scoring is read-only, so a request that died with
    its server is simply sent again."""

    def __init__(
        self, endpoints: Sequence[Endpoint], retry: RetryPolicy, first: int | None = None
    ) -> None:
        if not endpoints:
            raise ValueError("FailoverSender needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._retry = retry
        self._resting_until = [0.0] * len(self._endpoints)
        # Each worker starts at a random server, so many workers do not all begin on one.
        self._next = random.randrange(len(self._endpoints)) if first is None else first
        self.failovers = 0  # requests moved to another server (for logs and tests)

    @classmethod
    def of(cls, servers: Servers) -> FailoverSender:
        """A sender over every endpoint of ``servers``."""
        return cls(servers.endpoints(), servers.retry)

    def _pick(self) -> tuple[int, float]:
        """The next server in turn that is not resting (or the first to wake up) and how
        long to wait for it."""
        now = time.monotonic()
        count = len(self._endpoints)
        for step in range(count):
            index = (self._next + step) % count
            if self._resting_until[index] <= now:
                self._next = (index + 1) % count
                return index, 0.0
        index = min(range(count), key=lambda i: self._resting_until[i])
        return index, self._resting_until[index] - now

    async def call(self, api_call: ApiCall[T]) -> T:
        started = time.monotonic()
        failures = timeouts = 0
        while True:
            index, wait_s = self._pick()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            try:
                return await self._endpoints[index].call(api_call)
            except _FAILOVER as error:
                failures += 1
                timeouts += isinstance(error, RequestTimeoutError)
                # A 504 is this request being too slow: one other server may be less busy,
                # but sending it on and on only repeats the work.
                if timeouts and timeouts >= min(2, len(self._endpoints)):
                    raise
                delay = self._retry.next_delay_s(
                    failures, time.monotonic() - started, error.retry_after_s
                )
                if delay is None:
                    raise
                self._resting_until[index] = time.monotonic() + max(delay, 0.05)
                self.failovers += 1

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.close()


class Answer(Protocol):
    """An embedded engine's answer (``service.embedded.Answer``)."""

    status: int
    body: dict[str, Any]
    retry_after_s: float | None


class Embedded(Protocol):
    """An engine embedded in this process (``service.embedded.EmbeddedEngine``)."""

    async def request(self, method: Literal["GET", "POST"], path: str, body: Any = None) -> Any: ...


class EmbeddedSender:
    """Sends to an lmscore engine embedded in this process (``service.embedded``), with the
    same error types as a server's answers; 429 (queue full) waits its Retry-After."""

    def __init__(self, engine: Embedded, retry: RetryPolicy | None = None) -> None:
        self._engine = engine
        self._retry = retry or RetryPolicy(max_attempts=20)

    async def call(self, api_call: ApiCall[T]) -> T:
        started = time.monotonic()
        failures = 0
        while True:
            answer: Answer = await self._engine.request(
                api_call.method, api_call.path, api_call.body
            )
            if answer.status == 200:
                return api_call.parse(answer.body)
            error: LMScoreError = from_http(answer.status, answer.body, answer.retry_after_s)
            failures += 1
            delay = self._retry.next_delay_s(
                failures, time.monotonic() - started, error.retry_after_s
            )
            if answer.status not in self._retry.retry_statuses or delay is None:
                raise error
            await asyncio.sleep(delay)

    async def close(self) -> None:
        return None
