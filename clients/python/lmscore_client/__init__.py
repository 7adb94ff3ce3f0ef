"""Light client of the lmscore scoring service (REST and gRPC; no torch, no transformers).

>>> from lmscore_client import Client
>>> with Client("http://127.0.0.1:8000") as client:
...     client.score_text(["The capital of France is Paris."]).results[0].ppl
"""

from __future__ import annotations

from lmscore_client import build
from lmscore_client.build import Distribution, ScoreOptions
from lmscore_client.client import AsyncClient, Client
from lmscore_client.compare import CompareResponse, CompareResult, CompareToken, ModelScores
from lmscore_client.continuations import (
    ContinuationResponse,
    ContinuationResult,
    ContinuationToken,
)
from lmscore_client.errors import (
    ConnectionFailedError,
    InternalServerError,
    InvalidRequestError,
    LMScoreError,
    NotFoundError,
    OverloadedError,
    RequestTimeoutError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    UnexpectedResponseError,
)
from lmscore_client.grpc_client import GrpcClient
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
from lmscore_client.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AsyncClient",
    "Client",
    "CompareResponse",
    "CompareResult",
    "CompareToken",
    "ConnectionFailedError",
    "ContinuationResponse",
    "ContinuationResult",
    "ContinuationToken",
    "Distribution",
    "GrpcClient",
    "InternalServerError",
    "InvalidRequestError",
    "LMScoreError",
    "MessageScore",
    "ModelCard",
    "ModelScores",
    "NotFoundError",
    "OverloadedError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ScoreOptions",
    "ScoreResponse",
    "TextResult",
    "TokenScore",
    "TooLargeError",
    "TopToken",
    "UnauthorizedError",
    "UnavailableError",
    "UnexpectedResponseError",
    "Usage",
    "WordScore",
    "build",
]
