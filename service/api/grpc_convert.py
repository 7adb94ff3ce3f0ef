"""All conversion between protobuf messages and the shared ``schemas`` (gRPC door only).

Requests become the same pydantic models REST validates, so both doors apply one set of
rules; responses are the same pydantic results written into protobuf messages.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from service.api.json_body import json_data
from service.api.pb.lmscore.v1 import scoring_pb2 as pb
from service.errors import InvalidRequest, from_validation_errors
from service.schemas import (
    ChatScoreRequest,
    CompareRequest,
    ContinuationRequest,
    TextScoreRequest,
)

M = TypeVar("M", bound=Message)

OVERFLOW = {
    pb.OVERFLOW_UNSPECIFIED: "error",
    pb.OVERFLOW_ERROR: "error",
    pb.OVERFLOW_TRUNCATE: "truncate",
    pb.OVERFLOW_SLIDING_WINDOW: "sliding_window",
}


def _common(message: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": message.model or None,
        "return_tokens": message.return_tokens,
        "top_k": message.top_k,
        "overflow": OVERFLOW.get(message.overflow, f"unknown enum value {message.overflow}"),
        "return_entropy": message.return_entropy,
        "min_k": message.min_k,
    }
    if message.HasField("min_k_percent"):
        fields["min_k_percent"] = message.min_k_percent
    if message.HasField("stride"):
        fields["stride"] = message.stride
    if message.HasField("reference"):
        fields["reference"] = message.reference
    return fields


def _validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from exc


def text_request(message: pb.ScoreTextRequest) -> TextScoreRequest:
    """A ScoreTextRequest as the shared, validated request model."""
    fields = {
        **_common(message),
        "texts": list(message.texts),
        "prepend_bos": message.prepend_bos,
        "words": message.words,
    }
    result: TextScoreRequest = _validated(TextScoreRequest, fields)
    return result


def chat_request(message: pb.ScoreChatRequest) -> ChatScoreRequest:
    """A ScoreChatRequest as the shared, validated request model."""
    conversations = [
        [_chat_message(m, f"conversations[{i}][{j}]") for j, m in enumerate(conv.messages)]
        for i, conv in enumerate(message.conversations)
    ]
    fields = {
        **_common(message),
        "conversations": conversations,
        "include_end_of_turn": message.include_end_of_turn,
    }
    if message.score_roles:
        fields["score_roles"] = list(message.score_roles)
    result: ChatScoreRequest = _validated(ChatScoreRequest, fields)
    return result


def _chat_message(message: pb.ChatMessage, param: str) -> dict[str, Any]:
    """A message as REST's JSON object: role, content and the keys of ``extra`` beside them
    (for the chat template: name, tool_calls...)."""
    try:
        extra: dict[str, Any] = _whole_numbers(json_format.MessageToDict(message.extra))
    except ValueError as exc:  # NaN or infinity: JSON has neither
        raise InvalidRequest(f"extra is not JSON: {exc}", param=f"{param}.extra") from exc
    clash = sorted(extra.keys() & {"role", "content"})
    if clash:
        raise InvalidRequest(f"extra must not hold {', '.join(clash)}", param=f"{param}.extra")
    return {"role": message.role, "content": message.content, **extra}


def _whole_numbers(value: Any) -> Any:
    """A Struct's numbers are doubles: 3 comes back 3.0, which a template would print so.
    Whole numbers become ints again, as in the JSON a REST client sends."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def continuations_request(message: pb.ScoreContinuationsRequest) -> ContinuationRequest:
    """A ScoreContinuationsRequest as the shared, validated request model."""
    fields = {
        "model": message.model or None,
        "context": message.context,
        "continuations": list(message.continuations),
        "return_tokens": message.return_tokens,
    }
    if message.HasField("prepend_bos"):
        fields["prepend_bos"] = message.prepend_bos
    result: ContinuationRequest = _validated(ContinuationRequest, fields)
    return result


def compare_request(message: pb.CompareModelsRequest) -> CompareRequest:
    """A CompareModelsRequest as the shared, validated request model."""
    fields = {
        "models": list(message.models),
        "texts": list(message.texts),
        "token_level": message.token_level,
        "return_tokens": message.return_tokens,
    }
    result: CompareRequest = _validated(CompareRequest, fields)
    return result


def to_message(model: BaseModel, message_type: type[M]) -> M:
    """A response model as the protobuf message that mirrors it field for field."""
    message = message_type()
    # Nulls are skipped by ParseDict, which leaves proto3 optional fields unset. The data
    # is made in pieces: this runs on a worker thread for a large answer, and one call
    # making it all would hold the interpreter lock (the event loop) throughout.
    json_format.ParseDict(json_data(model), message)
    return message
