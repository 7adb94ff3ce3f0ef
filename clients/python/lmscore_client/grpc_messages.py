"""Conversion between the gRPC messages of ``lmscore.v1`` and the client's dataclasses and
errors (``GrpcClient`` sends and reads through these).

Unset optional protobuf fields become ``None``; ``tokens``/``top``/``messages`` are ``None``
where REST would leave them out or null. A failed call becomes the ``LMScoreError``
subclass REST would raise, with ``status`` the HTTP status REST would have answered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format

from lmscore_client import build
from lmscore_client._pb.lmscore.v1 import scoring_pb2 as pb
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
    ScoreResponse,
    TextResult,
    TokenScore,
    TopToken,
    Usage,
    WordScore,
)
from lmscore_client.retry import parse_retry_after

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


def as_json(message: Any) -> dict[str, Any]:
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


def answered_by_server(error: grpc.RpcError) -> bool:
    """Whether the server itself failed the call (it names the error type in a trailer),
    as opposed to the transport (no connection) or this client's own deadline."""
    if not isinstance(error, grpc.Call):
        return False
    return any(key == "lmscore-error-type" for key, _ in error.trailing_metadata() or ())


def stream_index_of(error: grpc.RpcError) -> int | None:
    """Which request of a ScoreTextStream failed (the server's lmscore-stream-index)."""
    if isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == "lmscore-stream-index" and str(value).isdigit():
                return int(value)
    return None


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


def text_message(api_call: build.ApiCall[ScoreResponse]) -> pb.ScoreTextRequest:
    """A built score/text request as its protobuf message (texts checked as REST would)."""
    body = dict(api_call.body or {})
    body["overflow"] = OVERFLOW[body["overflow"]]
    for i, text in enumerate(body["texts"]):
        _require_string(text, f"texts[{i}]")
    return pb.ScoreTextRequest(**body)


def chat_message(message: Any, param: str) -> pb.ChatMessage:
    if not isinstance(message, Mapping):
        raise InvalidRequestError(
            "a message should be an object with role and content",
            status=422,
            param=param,
            grpc_code="INVALID_ARGUMENT",
        )
    for key in ("role", "content"):
        _require_string(message.get(key), f"{param}.{key}")
    made = pb.ChatMessage(role=message["role"], content=message["content"])
    extra = {k: v for k, v in message.items() if k not in ("role", "content")}
    if extra:  # name, tool_calls...: the template reads them, as over REST
        try:
            made.extra.update(extra)
        except (TypeError, ValueError) as error:
            raise InvalidRequestError(
                f"a message's other keys must be JSON values: {error}",
                status=422,
                param=param,
                grpc_code="INVALID_ARGUMENT",
            ) from None
    return made
