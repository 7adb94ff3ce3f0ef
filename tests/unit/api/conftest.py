"""gRPC fixtures: an in-process ``GrpcDoor`` on 127.0.0.1:0 and a client channel to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest_asyncio

from service.api.grpc_server import GrpcDoor
from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from service.engine import Engine


@dataclass
class Served:
    """A running gRPC door, its engine and a channel to it."""

    door: GrpcDoor
    engine: Engine
    channel: grpc.aio.Channel
    stub: pb_grpc.ScorerStub
    address: str


@contextlib.asynccontextmanager
async def serve(engine: Engine) -> AsyncIterator[Served]:
    door = GrpcDoor(engine)
    port = door.bind("127.0.0.1", 0)
    await door.start()
    await door.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(door, engine, channel, pb_grpc.ScorerStub(channel), f"127.0.0.1:{port}")
    finally:
        await channel.close()
        await door.stop(0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def grpc_served(tiny_engine: Engine) -> AsyncIterator[Served]:
    """The door over ``tiny_engine`` (the engine behind the REST ``client`` fixture)."""
    async with serve(tiny_engine) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def grpc_factory(
    engine_factory: Callable[..., Engine],
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Starts a door over a fresh engine built with Settings overrides; stops it after."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> Served:
            return await stack.enter_async_context(serve(engine_factory(**overrides)))

        yield factory
