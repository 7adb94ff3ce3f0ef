"""Registering a gRPC service whose request parsing never raises.

The generated ``add_*Servicer_to_server`` lets a message that does not parse escape as
UNKNOWN, before any of our code runs (so it is neither answered in our terms nor counted).
Here such bytes become an ``_Undecodable`` and the method answers INVALID_ARGUMENT
through the door's own refusal path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from service.errors import LMScoreError, MalformedRequest

M = TypeVar("M", bound=Message)
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]
Streaming = Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Message]]
Refused = Callable[[str, grpc.aio.ServicerContext, LMScoreError], Awaitable[Message]]


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)


class _Undecodable:
    """Request bytes that do not parse as the method's message type."""

    __slots__ = ("error",)

    def __init__(self, error: MalformedRequest) -> None:
        self.error = error


def _lenient(message_type: type[M]) -> Callable[[bytes], M | _Undecodable]:
    """A request deserializer that never raises (grpc would answer UNKNOWN): bytes that
    are not a message of ``message_type`` become an ``_Undecodable``."""

    def parse(raw: bytes) -> M | _Undecodable:
        try:
            return message_type.FromString(raw)
        except DecodeError as exc:
            return _Undecodable(MalformedRequest(f"the request message is malformed: {exc}"))

    return parse


def _unary(name: str, behaviour: Unary, refused: Refused) -> Unary:
    """``behaviour`` for parsed requests; ``refused`` (INVALID_ARGUMENT) for the others."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Message:
        if isinstance(request, _Undecodable):
            return await refused(name, context, request.error)
        return await behaviour(request, context)

    return handle


def _streaming(behaviour: Streaming) -> Streaming:
    """``behaviour`` over the parsed requests; an unparsable one ends the stream with
    INVALID_ARGUMENT, as a request the engine refuses does."""

    async def parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                raise request.error
            yield request

    async def handle(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        # An async generator itself: grpc.aio runs any other callable as a sync handler.
        async for response in behaviour(parsed(requests), context):
            yield response

    return handle


def add_lenient_service(
    service: ServiceDescriptor, servicer: object, server: grpc.aio.Server, refused: Refused
) -> None:
    """Register ``servicer``'s methods for ``service`` (as the generated ``add_*_to_server``
    does) with request deserializers that never raise, so a message that does not parse
    is answered by ``refused`` (INVALID_ARGUMENT), not UNKNOWN."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        parse = _lenient(message_class(method.input_type))
        serialize = message_class(method.output_type).SerializeToString
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _streaming(behaviour), request_deserializer=parse, response_serializer=serialize
            )
        elif not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(method.name, behaviour, refused),
                request_deserializer=parse,
                response_serializer=serialize,
            )
        else:
            raise NotImplementedError(f"{method.full_name}: only unary and bidi calls are served")
    name = service.full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
