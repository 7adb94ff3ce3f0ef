"""Request and response models shared by every door (REST, gRPC, OpenAI-compatible).

Units: every logprob is a natural log (nats); ``mean_nll`` is nats per scored token;
``bits_per_byte``/``bits_per_char`` are base-2 bits per UTF-8 byte / Unicode code point
of the scored tokens' text. One module per endpoint family; import from this package.
"""

from service.schemas.catalog import ModelCard, ModelList, ReferenceCard, ReferenceList
from service.schemas.compare import (
    CompareRequest,
    CompareResponse,
    CompareResult,
    CompareToken,
    ModelScores,
)
from service.schemas.continuation import (
    ContinuationRequest,
    ContinuationResponse,
    ContinuationResult,
    ContinuationToken,
)
from service.schemas.errors import ErrorDetail, ErrorResponse, ErrorType
from service.schemas.fields import MAX_TOP_K, NonEmptyText, Overflow, Text
from service.schemas.score import (
    Aggregate,
    ChatMessage,
    ChatScoreRequest,
    MessageScore,
    ScoreResponse,
    TextResult,
    TextScoreRequest,
    TokenScore,
    TopToken,
    Usage,
    WordScore,
)

__all__ = [
    "MAX_TOP_K",
    "Aggregate",
    "ChatMessage",
    "ChatScoreRequest",
    "CompareRequest",
    "CompareResponse",
    "CompareResult",
    "CompareToken",
    "ContinuationRequest",
    "ContinuationResponse",
    "ContinuationResult",
    "ContinuationToken",
    "ErrorDetail",
    "ErrorResponse",
    "ErrorType",
    "MessageScore",
    "ModelCard",
    "ModelList",
    "ModelScores",
    "NonEmptyText",
    "Overflow",
    "ReferenceCard",
    "ReferenceList",
    "ScoreResponse",
    "Text",
    "TextResult",
    "TextScoreRequest",
    "TokenScore",
    "TopToken",
    "Usage",
    "WordScore",
]
