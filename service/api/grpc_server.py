"""The gRPC door: a ``grpc.aio`` server in the REST server's event loop, over the same engine.

Servicer methods are thin: check the key, convert (``grpc_convert``), call the engine with
the call's deadline, convert back. Errors leave through the shared code table; standard
health checking and server reflection are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pydantic import BaseModel

from service.api import grpc_convert as convert
from service.api.auth import KeyChecker
from service.api.grpc_calls import (
    ENDPOINTS,
    abort,
    before_deadline,
    finish_cancelled,
    internal,
    observe,
)
from service.api.grpc_handlers import add_lenient_service
from service.api.grpc_stream import StreamBacklog
from service.api.json_body import off_loop_if_large
from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from service.engine import Engine
from service.errors import LMScoreError, TooLarge, grpc_code_name
from service.request_metrics import RequestRecord
from service.served import RequestTiming

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=Message)


class Answered(Protocol):
    """What the engine's scoring calls return: a response model and its timing."""

    @property
    def response(self) -> BaseModel: ...

    @property
    def timing(self) -> RequestTiming: ...


STREAM_WINDOW = 64  # requests of one stream in flight ahead of the client's reading

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Scorer"].full_name


class _Aborted(Exception):
    """The call already ended with a status; nothing more to send."""


class ScorerServicer(pb_grpc.ScorerServicer):
    """``lmscore.v1.Scorer`` over the engine."""

    def __init__(self, engine: Engine, keys: KeyChecker) -> None:
        self.engine = engine
        self.keys = keys

    async def ScoreText(
        self, request: pb.ScoreTextRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreTextResponse:
        call = self._unary(
            context, request, convert.text_request, self.engine.score_text, pb.ScoreTextResponse
        )
        return await observe("ScoreText", context, call)

    async def ScoreChat(
        self, request: pb.ScoreChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreChatResponse:
        call = self._unary(
            context, request, convert.chat_request, self.engine.score_chat, pb.ScoreChatResponse
        )
        return await observe("ScoreChat", context, call)

    async def ScoreContinuations(
        self, request: pb.ScoreContinuationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreContinuationsResponse:
        call = self._unary(
            context,
            request,
            convert.continuations_request,
            self.engine.score_continuations,
            pb.ScoreContinuationsResponse,
        )
        return await observe("ScoreContinuations", context, call)

    async def CompareModels(
        self, request: pb.CompareModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareModelsResponse:
        call = self._unary(
            context,
            request,
            convert.compare_request,
            self.engine.compare_models,
            pb.CompareModelsResponse,
        )
        return await observe("CompareModels", context, call)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return await self._read(
            "ListModels", context, self.engine.list_models, pb.ListModelsResponse
        )

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelCard:
        card = functools.partial(self.engine.model_card, request.id)
        return await self._read("GetModel", context, card, pb.ModelCard)

    async def ListReferences(
        self, request: pb.ListReferencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReferencesResponse:
        references = self.engine.list_references
        return await self._read("ListReferences", context, references, pb.ListReferencesResponse)

    async def ScoreTextStream(
        self,
        request_iterator: AsyncIterator[pb.ScoreTextRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ScoreTextResponse]:
        """Requests are scored concurrently (at most STREAM_WINDOW ahead of the client's
        reading), paced by the stream's own backlog (``StreamBacklog``); responses go out
        in request order. An error that ends the stream names the request it belongs to
        in the ``lmscore-stream-index`` trailer (0-based; absent for the whole stream's)."""
        record = RequestRecord(ENDPOINTS["ScoreTextStream"], "grpc")
        backlog = StreamBacklog()
        in_order: asyncio.Queue[asyncio.Task[pb.ScoreTextResponse] | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    attempt = functools.partial(self._text, request, context)
                    in_order.put_nowait(asyncio.ensure_future(backlog.paced(attempt)))
            finally:
                in_order.put_nowait(None)

        reader = asyncio.ensure_future(read_requests())
        answered = 0
        failing: tuple[tuple[str, str], ...] = ()  # the request whose answer is awaited
        try:
            self._authorize(context)
            while (task := await before_deadline(in_order.get(), context)) is not None:
                failing = (("lmscore-stream-index", str(answered)),)
                response = await task
                failing = ()
                window.release()
                yield response
                answered += 1
            await reader
            remaining = context.time_remaining()
            if context.cancelled() or (remaining is not None and remaining <= 0):
                # The reads also end quietly when the call itself ended (seen at the
                # deadline): not an answered stream.
                finish_cancelled(record, context)
            else:
                record.finish("OK")
        except LMScoreError as error:
            record.finish(grpc_code_name(error), error)
            await abort(context, error, failing)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await internal("ScoreTextStream", record, context, exc, failing)
        finally:
            # Cancelled while awaiting (CancelledError), or closed while suspended at a
            # yield (GeneratorExit): either way the call ended early. A no-op once recorded.
            finish_cancelled(record, context)
            reader.cancel()
            while not in_order.empty():
                if (task := in_order.get_nowait()) is not None:
                    _discard(task)

    async def _text(
        self, request: pb.ScoreTextRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreTextResponse:
        """One request of a stream (its timing has no metadata of its own to go in)."""
        outcome = await self._score(context, request, convert.text_request, self.engine.score_text)
        return await self._reply(outcome.response, pb.ScoreTextResponse)

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        request: Message,
        parse: Callable[[Any], R],
        score: Callable[[R, float | None], Awaitable[Answered]],
        reply: type[M],
    ) -> M:
        """One scoring call: score it, send its timing as initial metadata (the REST
        door's headers), convert back."""
        outcome = await self._score(context, request, parse, score)
        message = await self._reply(outcome.response, reply)
        await context.send_initial_metadata(tuple(outcome.timing.headers().items()))
        return message

    async def _score(
        self,
        context: grpc.aio.ServicerContext,
        request: Message,
        parse: Callable[[Any], R],
        score: Callable[[R, float | None], Awaitable[Answered]],
    ) -> Answered:
        """Authorize, check the size, convert, score before the call's deadline."""
        self._authorize(context)
        self._check_size(request)
        return await score(parse(request), context.time_remaining())

    def _check_size(self, request: Message) -> None:
        # The transport refuses far larger messages itself (RESOURCE_EXHAUSTED); up to
        # there, the contract's too_large answer applies, as on REST.
        limit = self.engine.settings.max_body_bytes
        if request.ByteSize() > limit:
            raise TooLarge(f"request message exceeds {limit} bytes", param="body")

    async def _reply(self, response: BaseModel, reply: type[M]) -> M:
        """``response`` as ``reply``, or TooLarge (see ``_sendable``). A large answer is
        converted on a worker thread: the conversion is Python, about 1.3 s for 100,000
        per-token entries, which would stop the event loop for every other call."""
        to_reply = functools.partial(convert.to_message, message_type=reply)
        return self._sendable(await off_loop_if_large(response, to_reply))

    def _sendable(self, message: M) -> M:
        """The reply, or TooLarge where the transport would refuse to send it (after all
        the work, as RESOURCE_EXHAUSTED, which clients read as "retry later")."""
        limit = self.engine.settings.grpc_max_send_bytes
        size = message.ByteSize()
        if size > limit:
            raise TooLarge(
                f"the answer is {size} bytes, over --grpc-max-send-bytes {limit}: ask for "
                "fewer texts, tokens or top_k",
                param="return_tokens",
            )
        return message

    async def _read(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        answer: Callable[[], BaseModel],
        reply: type[M],
    ) -> M:
        """A read of the engine's catalogue (models, references): key, answer, convert."""

        async def call() -> M:
            self._authorize(context)
            return convert.to_message(answer(), reply)

        return await observe(method, context, call())

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self.keys.enabled:
            metadata = context.invocation_metadata() or ()
            self.keys.check_all([value for key, value in metadata if key == "authorization"])


def _discard(task: asyncio.Task[pb.ScoreTextResponse]) -> None:
    """Cancel a stream's unsent work; read a finished task's error so none goes unseen."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


async def _refused(method: str, context: grpc.aio.ServicerContext, error: LMScoreError) -> Any:
    """Answer a request refused before it reached its method, observed like any refusal."""

    async def refuse() -> NoReturn:
        raise error

    return await observe(method, context, refuse())


# grpcio-reflection serves only v1alpha; v1 is the same protocol (the same messages, field
# for field) under a new package, and tools that speak only v1 stop at UNIMPLEMENTED.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.aio.Server) -> None:
    """Server reflection under both names, v1alpha and v1, from one servicer."""
    names = [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


class GrpcDoor:
    """The gRPC server: Scorer, health and reflection, on one port."""

    def __init__(self, engine: Engine) -> None:
        settings = engine.settings
        self.server = grpc.aio.server(
            options=[
                # Twice the body limit: in between, the servicer answers too_large itself.
                ("grpc.max_receive_message_length", 2 * settings.max_body_bytes),
                ("grpc.max_send_message_length", settings.grpc_max_send_bytes),
                # A port another process holds is an error, as for HTTP, not a silent
                # share of its calls (gRPC sets SO_REUSEPORT by default).
                ("grpc.so_reuseport", 0),
            ]
        )
        servicer = ScorerServicer(engine, KeyChecker(settings.all_api_keys()))
        add_lenient_service(
            pb.DESCRIPTOR.services_by_name["Scorer"], servicer, self.server, _refused
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _enable_reflection(self.server)

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the port (chosen by the OS when 0)."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = self.server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {address}")
        return bound

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        """Health status of the whole server and of lmscore.v1.Scorer."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
