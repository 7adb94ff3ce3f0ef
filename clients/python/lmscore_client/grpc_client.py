"""gRPC client (``lmscore.v1.Scorer``) returning the same dataclasses as the REST clients.

Unset optional protobuf fields become ``None``; ``tokens``/``top``/``messages`` are ``None``
where REST would leave them out or null. Every call has a deadline (``timeout`` seconds)
and is retried on RESOURCE_EXHAUSTED/UNAVAILABLE like the REST client (honouring the
server's ``retry-after`` trailing metadata).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import grpc
from google.protobuf import json_format

from lmscore_client import build
from lmscore_client._pb.lmscore.v1 import scoring_pb2 as pb
from lmscore_client._pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc
from lmscore_client.build import ChatFields, Conversation, ScoreOptions, TextFields
from lmscore_client.compare import CompareResponse
from lmscore_client.continuations import ContinuationResponse
from lmscore_client.errors import (
    GRPC_CODES,
    InternalServerError,
    InvalidRequestError,
    LMScoreError,
    TooLargeError,
)
from lmscore_client.results import (
    Aggregate,
    MessageScore,
    ModelCard,
    ScoreResponse,
    TextResult,
    TokenScore,
    TopToken,
    Usage,
    WordScore,
)
from lmscore_client.retry import RetryPolicy, parse_retry_after

OVERFLOW = {
    "error": pb.OVERFLOW_ERROR,
    "truncate": pb.OVERFLOW_TRUNCATE,
    "sliding_window": pb.OVERFLOW_SLIDING_WINDOW,
}
_PARAM = re.compile(r"^((?:texts|conversations)\[\d+\][\w\[\].]*): ")


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _token(t: pb.TokenScore, top_k: int) -> TokenScore:
    has_logprob = t.HasField("logprob")
    top = None
    if top_k > 0 and has_logprob:
        top = [TopToken(id=a.id, text=a.text, logprob=a.logprob) for a in t.top]
    return TokenScore(
        id=t.id,
        text=t.text,
        start=t.start,
        end=t.end,
        logprob=t.logprob if has_logprob else None,
        rank=_opt(t, "rank"),
        top=top,
        message_index=_opt(t, "message_index"),
        scored=_opt(t, "scored"),
        entropy=_opt(t, "entropy"),
    )


def _result(r: pb.TextResult, top_k: int, chat: bool) -> TextResult:
    return TextResult(
        num_tokens=r.num_tokens,
        num_scored_tokens=r.num_scored_tokens,
        sum_logprob=r.sum_logprob,
        mean_nll=_opt(r, "mean_nll"),
        ppl=_opt(r, "ppl"),
        bits_per_byte=_opt(r, "bits_per_byte"),
        bits_per_char=_opt(r, "bits_per_char"),
        truncated=r.truncated,
        tokens=[_token(t, top_k) for t in r.tokens] if r.tokens else None,
        messages=[
            MessageScore(
                index=m.index,
                role=m.role,
                scored=m.scored,
                num_scored_tokens=m.num_scored_tokens,
                sum_logprob=m.sum_logprob,
                mean_nll=_opt(m, "mean_nll"),
                ppl=_opt(m, "ppl"),
            )
            for m in r.messages
        ]
        if chat
        else None,
        percentile=_opt(r, "percentile"),
        is_outlier=_opt(r, "is_outlier"),
        mean_entropy=_opt(r, "mean_entropy"),
        entropy_bits_per_char=_opt(r, "entropy_bits_per_char"),
        min_k_logprob=_opt(r, "min_k_logprob"),
        min_k_plus_plus=_opt(r, "min_k_plus_plus"),
        words=[
            WordScore(
                text=w.text,
                start=w.start,
                end=w.end,
                num_tokens=w.num_tokens,
                logprob=_opt(w, "logprob"),
                logprob_corrected=_opt(w, "logprob_corrected"),
                surprisal_bits=_opt(w, "surprisal_bits"),
            )
            for w in r.words
        ]
        if r.words
        else None,
    )


def _as_json(message: Any) -> dict[str, Any]:
    """A reply as the REST JSON would carry it (fields without presence included)."""
    data: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return data


def response_from_pb(
    message: pb.ScoreTextResponse | pb.ScoreChatResponse, top_k: int = 0, chat: bool = False
) -> ScoreResponse:
    """Convert a protobuf response into the REST client's ``ScoreResponse``."""
    a = message.aggregate
    return ScoreResponse(
        model=message.model,
        model_revision=message.model_revision,
        results=[_result(r, top_k, chat) for r in message.results],
        aggregate=Aggregate(
            num_scored_tokens=a.num_scored_tokens,
            sum_logprob=a.sum_logprob,
            mean_nll=_opt(a, "mean_nll"),
            ppl=_opt(a, "ppl"),
        ),
        usage=Usage(prompt_tokens=message.usage.prompt_tokens),
    )


def error_from_rpc(error: grpc.RpcError) -> LMScoreError:
    """An ``LMScoreError`` subclass for a failed call (``status`` as REST would answer)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(code)
    trailers: dict[str, str] = {}
    if isinstance(error, grpc.Call):
        trailers = {key: str(value) for key, value in error.trailing_metadata() or ()}
    retry_after = parse_retry_after(trailers.get("retry-after"))
    cls, status = GRPC_CODES.get(code.name, (InternalServerError, 500))
    if code.name == "RESOURCE_EXHAUSTED" and _OVER_MESSAGE_LIMIT in details:
        # gRPC's own message size limit (either side), not a full queue: sending the same
        # message again cannot succeed, so it is too large (413), never retried.
        cls, status = TooLargeError, 413
    if trailers.get("lmscore-error-type") == "too_large":  # INVALID_ARGUMENT, 413 on REST
        cls, status = TooLargeError, 413
    match = _PARAM.match(details)  # servers before the lmscore-param trailer
    return cls(
        details,
        status=status,
        type=trailers.get("lmscore-error-type"),
        param=trailers.get("lmscore-param") or (match.group(1) if match else None),
        retry_after_s=retry_after,
        grpc_code=code.name,
    )


# How gRPC core words a message over max_{send,receive}_message_length.
_OVER_MESSAGE_LIMIT = "message larger than max"


def _answered_by_server(error: grpc.RpcError) -> bool:
    """Whether the server itself failed the call (it names the error type in a trailer),
    as opposed to the transport (no connection) or this client's own deadline."""
    if not isinstance(error, grpc.Call):
        return False
    return any(key == "lmscore-error-type" for key, _ in error.trailing_metadata() or ())


def _stream_index(error: grpc.RpcError) -> int | None:
    """Which request of a ScoreTextStream failed (the server's lmscore-stream-index)."""
    if isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == "lmscore-stream-index" and str(value).isdigit():
                return int(value)
    return None


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
                retryable = self._retryable(error, _answered_by_server(rpc_error))
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
            reply = self._call(self._stub.ScoreText, _text_message(api_call))
            return response_from_pb(reply, top_k)
        body["overflow"] = OVERFLOW[body["overflow"]]
        body["conversations"] = [
            pb.Conversation(
                messages=[_message(m, f"conversations[{i}][{j}]") for j, m in enumerate(conv)]
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
        refused: list[LMScoreError] = []

        def messages() -> Iterator[pb.ScoreTextRequest]:
            for i, texts in enumerate(requests):
                try:
                    message = _text_message(build.score_text(texts, opts))
                except LMScoreError as error:  # refused here, as the server would refuse it
                    error.stream_index = i
                    refused.append(error)
                    return
                yield message

        call = self._stub.ScoreTextStream(messages(), timeout=timeout, metadata=self._metadata)
        try:
            for reply in call:
                yield response_from_pb(reply, opts.top_k)
        except grpc.RpcError as rpc_error:
            error = error_from_rpc(rpc_error)
            error.stream_index = _stream_index(rpc_error)
            raise error from None
        finally:
            call.cancel()  # a no-op once the stream has ended
        if refused:
            raise refused[0]

    def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str | None = None,
        return_tokens: bool = False,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once)."""
        api_call = build.score_continuations(
            context, continuations, model=model, return_tokens=return_tokens
        )
        request = pb.ScoreContinuationsRequest(**(api_call.body or {}))
        return api_call.parse(_as_json(self._call(self._stub.ScoreContinuations, request)))

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
        return api_call.parse(_as_json(self._call(self._stub.CompareModels, request)))

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


def _require_string(value: Any, param: str) -> None:
    """Refuse what the REST door refuses with 422: a proto string field would take None as
    "" (a message with null content scored as empty) and fail on any other type, and a
    lone surrogate cannot be UTF-8, which proto strings are."""
    if not isinstance(value, str):
        message = f"Input should be a valid string, not {type(value).__name__}"
    else:
        try:
            value.encode("utf-8")
            return
        except UnicodeEncodeError:
            message = "not valid Unicode text (lone surrogate)"
    raise InvalidRequestError(message, status=422, param=param, grpc_code="INVALID_ARGUMENT")


def _text_message(api_call: build.ApiCall[ScoreResponse]) -> pb.ScoreTextRequest:
    """A built score/text request as its protobuf message (texts checked as REST would)."""
    body = dict(api_call.body or {})
    body["overflow"] = OVERFLOW[body["overflow"]]
    for i, text in enumerate(body["texts"]):
        _require_string(text, f"texts[{i}]")
    return pb.ScoreTextRequest(**body)


def _message(message: Any, param: str) -> pb.ChatMessage:
    if not isinstance(message, Mapping):
        raise InvalidRequestError(
            "a message should be an object with role and content",
            status=422,
            param=param,
            grpc_code="INVALID_ARGUMENT",
        )
    for key in ("role", "content"):
        _require_string(message.get(key), f"{param}.{key}")
    chat_message = pb.ChatMessage(role=message["role"], content=message["content"])
    extra = {k: v for k, v in message.items() if k not in ("role", "content")}
    if extra:  # name, tool_calls...: the template reads them, as over REST
        try:
            chat_message.extra.update(extra)
        except (TypeError, ValueError) as error:
            raise InvalidRequestError(
                f"a message's other keys must be JSON values: {error}",
                status=422,
                param=param,
                grpc_code="INVALID_ARGUMENT",
            ) from None
    return chat_message
