"""Process lifecycle: bind the ports, start REST and gRPC, load models, handle signals.

Both servers listen before models are loaded, so probes see /healthz 200, /readyz 503 and
gRPC health NOT_SERVING while loading. The ``ready http=HOST:PORT grpc=HOST:PORT`` log line
is written once every model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from service.api.grpc_server import GrpcDoor
from service.api.rest import create_app
from service.engine import Engine
from service.models import ModelSpecError, checked_specs
from service.settings import Settings

log = logging.getLogger("service.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service handles signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    try:
        specs = checked_specs(settings)  # before binding anything
    except ModelSpecError as exc:
        log.error("%s", exc)
        return 2
    engine = Engine(settings)
    grpc_door = GrpcDoor(engine)
    try:
        http_sock = bind_socket(settings.host, settings.http_port)
    except OSError as exc:
        log.error("cannot listen on %s (HTTP): %s", _address(settings.host, settings.http_port),
                  exc.strerror or exc)  # fmt: skip
        return 1
    try:
        grpc_port = grpc_door.bind(settings.host, settings.grpc_port)
    except (OSError, RuntimeError) as exc:  # grpcio raises RuntimeError("Failed to bind...")
        log.error("cannot listen on %s (gRPC): %s", _address(settings.host, settings.grpc_port),
                  exc)  # fmt: skip
        http_sock.close()
        return 1
    _log_auth(settings)
    await grpc_door.start()
    config = uvicorn.Config(
        create_app(engine),
        log_level=settings.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    shutdown = _Shutdown(engine, server, grpc_door, settings.shutdown_grace_s)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.on_signal, sig)

    http_address = _address(*http_sock.getsockname()[:2])
    ready = f"ready http={http_address} grpc={_address(settings.host, grpc_port)}"
    server_task = asyncio.create_task(server.serve(sockets=[http_sock]))
    load_task = asyncio.create_task(engine.load(specs))
    try:
        code = await _run_until_stopped(server, (server_task, load_task), shutdown, ready)
    finally:
        await grpc_door.stop(grace_s=1.0)
        await engine.close(wait_s=0.0 if shutdown.hurry else 30.0)
        http_sock.close()
        log.info("stopped")
    if shutdown.hurry or not load_task.done() or load_task.cancelled():
        # Stopped while loading: the load goes on in a thread (a download, a read) that
        # cannot be interrupted, and the interpreter would wait for it at exit.
        _exit_now(code)
    return code


def _log_auth(settings: Settings) -> None:
    """Say at start-up whether scoring needs a key: an open server should be a choice."""
    keys = settings.all_api_keys()
    if keys:
        log.info("auth on: %d API key(s); scoring and completions need 'Authorization: "
                 "Bearer KEY'", len(keys))  # fmt: skip
    else:
        log.info("auth off: no API keys (LMSCORE_API_KEYS or --api-keys-file); every endpoint "
                 "is open")  # fmt: skip


async def _run_until_stopped(
    server: uvicorn.Server,
    tasks: tuple[asyncio.Task[None], asyncio.Task[None]],
    shutdown: _Shutdown,
    ready_line: str,
) -> int:
    """Serve until the HTTP server stops; log ``ready_line`` once the models are loaded.
    The exit code: 1 if loading failed, else 0."""
    server_task, load_task = tasks
    await asyncio.wait({server_task, load_task}, return_when=asyncio.FIRST_COMPLETED)
    if load_task.done() and load_task.exception() is not None:
        log.error("loading models failed: %s", load_task.exception())
        server.should_exit = True
        await server_task
        return 1
    if load_task.done() and not shutdown.requested:
        await shutdown.grpc_door.set_serving(True)
        # At the level logs are kept at: the ready line (with the ports) always shows.
        log.log(max(logging.INFO, log.getEffectiveLevel()), "%s", ready_line)
    await server_task
    load_task.cancel()
    return 0


def _exit_now(code: int) -> None:
    """Leave without interpreter teardown: a forward pass may still run on its (daemon)
    thread, and tearing the interpreter down under a running torch op aborts the process
    (SIGABRT) instead of exiting with ``code``."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Shutdown:
    """SIGTERM/SIGINT: stop admitting (503, /readyz 503), let admitted work finish within
    the grace period, then stop the servers. Work still running after it, or at a second
    signal, fails at once with 503 (UNAVAILABLE), and the process exits without waiting
    for a forward pass in flight (``hurry``)."""

    def __init__(
        self, engine: Engine, server: uvicorn.Server, grpc_door: GrpcDoor, grace_s: float
    ) -> None:
        self.engine = engine
        self.server = server
        self.grpc_door = grpc_door
        self.grace_s = grace_s
        self.requested = False
        self.hurry = False
        self._tasks: list[asyncio.Task[None]] = []

    def on_signal(self, sig: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        if self.requested:
            log.warning("received %s again, stopping now", sig.name)
            self._tasks.append(loop.create_task(self._stop(force=True)))
            return
        self.requested = True
        log.info("received %s, draining (up to %.0f s)", sig.name, self.grace_s)
        self._tasks.append(loop.create_task(self._drain()))

    async def _drain(self) -> None:
        await self.grpc_door.set_serving(False)
        finished = await self.engine.drain(self.grace_s)
        if finished:
            self.server.should_exit = True
            return
        log.warning("%d requests still running after the grace period", self.engine.inflight)
        await self._stop(force=False)

    async def _stop(self, *, force: bool) -> None:
        """Fail what is left with 503 (its callers get the contract's error, not a cut
        connection), then stop the servers."""
        self.hurry = True
        await self.engine.close(wait_s=0.0)
        self.server.force_exit = force
        self.server.should_exit = True
