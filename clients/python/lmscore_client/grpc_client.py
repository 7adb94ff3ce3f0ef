"""gRPC client (``lmscore.v1.Scorer``) returning the same dataclasses as the REST clients.

Every call has a deadline (``timeout`` seconds) and is retried as its ``RetryPolicy``
says, like the REST client (honouring the server's ``retry-after`` trailing metadata);
the conversions live in ``grpc_messages``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Unpack

import grpc

from lmscore_client import build
from lmscore_client._pb.lmscore.v1 import scoring_pb2 as pb
from lmscore_client._pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from lmscore_client.build import ChatFields, Conversation, ScoreOptions, TextFields
from lmscore_client.compare import CompareResponse
from lmscore_client.continuations import ContinuationResponse
from lmscore_client.errors import LMScoreError, TooLargeError
from lmscore_client.grpc_messages import (
    OVERFLOW,
    answered_by_server,
    as_json,
    chat_message,
    error_from_rpc,
    response_from_pb,
    stream_index_of,
    text_message,
)
from lmscore_client.results import ModelCard, ScoreResponse
from lmscore_client.retry import RetryPolicy


class GrpcClient:
    """Blocking gRPC client. ``target`` is ``host:port``; ``timeout`` is the per-call
    deadline in seconds; ``api_key`` (default ``$LMSCORE_API_KEY``) is sent as metadata
    ``authorization: Bearer KEY``."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        *,
        retry: RetryPolicy | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        api_key = api_key if api_key is not None else os.environ.get("LMSCORE_API_KEY")
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel = channel or grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = pb_grpc.ScorerStub(self._channel)
        self._sleep: Callable[[float], None] = time.sleep

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        """One unary call, retried as ``self.retry`` says: a server's refusal whose REST
        status is in ``retry_statuses`` (429 and 503 by default), and a failed connection
        when ``retry_connection_errors``. ``timeout`` applies to each attempt."""
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error)
                retryable = self._retryable(error, answered_by_server(rpc_error))
            failures += 1
            delay = self.retry.next_delay_s(
                failures, time.monotonic() - started, error.retry_after_s
            )
            if not retryable or delay is None:
                raise error
            self._sleep(delay)

    def _retryable(self, error: LMScoreError, answered: bool) -> bool:
        if isinstance(error, TooLargeError):  # the same message cannot fit next time
            return False
        if not answered and error.grpc_code == "UNAVAILABLE":  # no connection
            return self.retry.retry_connection_errors
        if not answered and error.grpc_code == "DEADLINE_EXCEEDED":
            return False  # this client's own deadline: the server may still be working
        return error.status in self.retry.retry_statuses

    def score_text(
        self,
        texts: str | Sequence[str],
        options: ScoreOptions | None = None,
        **fields: Unpack[TextFields],
    ) -> ScoreResponse:
        """Score plain texts (the options as ``Client.score_text``)."""
        return self.score(build.score_text(texts, build.options_with(options, fields)))

    def score_chat(
        self,
        conversations: Sequence[Conversation] | Conversation,
        options: ScoreOptions | None = None,
        **fields: Unpack[ChatFields],
    ) -> ScoreResponse:
        """Score conversations (the options as ``Client.score_chat``)."""
        return self.score(build.score_chat(conversations, build.options_with(options, fields)))

    def score(self, api_call: build.ApiCall[ScoreResponse]) -> ScoreResponse:
        """Send a built text or chat scoring request (``lmscore_client.build``)."""
        body = dict(api_call.body or {})
        top_k = int(body["top_k"])
        if "conversations" not in body:
            reply = self._call(self._stub.ScoreText, text_message(api_call))
            return response_from_pb(reply, top_k)
        body["overflow"] = OVERFLOW[body["overflow"]]
        body["conversations"] = [
            pb.Conversation(
                messages=[chat_message(m, f"conversations[{i}][{j}]") for j, m in enumerate(conv)]
            )
            for i, conv in enumerate(body["conversations"])
        ]
        reply = self._call(self._stub.ScoreChat, pb.ScoreChatRequest(**body))
        return response_from_pb(reply, top_k, chat=True)

    def score_text_stream(
        self,
        requests: Iterable[str | Sequence[str]],
        options: ScoreOptions | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[TextFields],
    ) -> Iterator[ScoreResponse]:
        """Score many requests over one ``ScoreTextStream`` call: each item of ``requests``
        (a text, or a list of texts) is one request, with the same options; the answers
        come back one per request, in order, while later requests are still being sent.
        ``requests`` is read lazily, so a corpus need not fit in memory.

        ``timeout`` is a deadline in seconds for the whole stream (default none: a stream
        may run as long as it has requests). The server paces a stream by its own
        backlog, so there are no retries here. An error ends the stream and is raised with
        ``stream_index``, the position of the request it belongs to (None when it belongs
        to the whole stream, like a missing key); the answers before it were yielded.
        Closing the generator early cancels the call.
        """
        opts = build.options_with(options, fields)
        # What went wrong on our side while gRPC's thread read ``requests``: raised here,
        # where the caller is (gRPC would log it there and fail the call as UNKNOWN).
        failed: list[BaseException] = []

        def messages() -> Iterator[pb.ScoreTextRequest]:
            index = 0  # of the request being read
            try:
                for texts in requests:
                    yield text_message(build.score_text(texts, opts))
                    index += 1
            except LMScoreError as error:  # refused here, as the server would refuse it
                error.stream_index = index
                failed.append(error)
            except Exception as error:  # the caller's iterator, or a request that is no text
                error.add_note(f"while reading request {index} of the stream")
                failed.append(error)

        call = self._stub.ScoreTextStream(messages(), timeout=timeout, metadata=self._metadata)
        try:
            for reply in call:
                yield response_from_pb(reply, opts.top_k)
        except grpc.RpcError as rpc_error:
            if failed:
                raise failed[0] from None
            error = error_from_rpc(rpc_error)
            error.stream_index = stream_index_of(rpc_error)
            raise error from None
        finally:
            call.cancel()  # a no-op once the stream has ended
        if failed:
            raise failed[0]

    def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str | None = None,
        return_tokens: bool = False,
        prepend_bos: bool | None = None,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once); with
        ``prepend_bos`` the model's BOS before the context (unset: where its tokenizer adds
        one by default)."""
        api_call = build.score_continuations(
            context,
            continuations,
            model=model,
            return_tokens=return_tokens,
            prepend_bos=prepend_bos,
        )
        request = pb.ScoreContinuationsRequest(**(api_call.body or {}))
        return api_call.parse(as_json(self._call(self._stub.ScoreContinuations, request)))

    def compare(
        self,
        models: Sequence[str],
        texts: str | Sequence[str],
        *,
        token_level: bool = False,
        return_tokens: bool = False,
    ) -> CompareResponse:
        """``texts`` under two models ``[a, b]``: both models' scores and the bits-per-byte
        ratio; with ``token_level`` (identical tokenizers) KL(a || b), top-1 agreement and
        Binoculars (a observes, b performs)."""
        api_call = build.compare(
            models, texts, token_level=token_level, return_tokens=return_tokens
        )
        request = pb.CompareModelsRequest(**(api_call.body or {}))
        return api_call.parse(as_json(self._call(self._stub.CompareModels, request)))

    def models(self) -> list[ModelCard]:
        """The served models."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [
            ModelCard(
                id=m.id,
                backend=m.backend,
                dtype=m.dtype,
                device=m.device,
                max_context=m.max_context,
                revision=m.revision,
                has_chat_template=m.has_chat_template,
                compiled=m.compiled,
                object=m.object or "model",
                created=m.created,
                owned_by=m.owned_by or "lmscore",
            )
            for m in response.data
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
