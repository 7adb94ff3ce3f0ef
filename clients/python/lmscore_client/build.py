"""The one place requests are built: every endpoint's body, path and typed answer, with no
I/O. ``Client``, ``AsyncClient``, ``GrpcClient``, the file commands and the Ray adapter all
build through here and differ only in how they send.

Optional fields (``stride``, ``reference``, ``score_roles``, the distribution scores) are
sent only when set, so a server that predates a field still accepts requests that do not
use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypedDict, TypeVar

from lmscore_client.compare import CompareResponse
from lmscore_client.continuations import ContinuationResponse
from lmscore_client.results import ModelCard, ScoreResponse

T = TypeVar("T")
Conversation = Sequence[Mapping[str, Any]]
Overflow = Literal["error", "truncate", "sliding_window"]


@dataclass(frozen=True)
class Distribution:
    """Scores from the model's full next-token distribution to ask for (transformers
    backend): ``entropy`` adds ``mean_entropy``, ``entropy_bits_per_char`` and per-token
    ``entropy`` (nats); ``min_k`` adds ``min_k_logprob`` (Min-K% Prob, nats) and
    ``min_k_plus_plus`` (Min-K%++) over the ``min_k_percent`` least likely tokens;
    ``words`` (texts only) adds per-word scores (``TextResult.words``)."""

    entropy: bool = False
    min_k: bool = False
    min_k_percent: float = 20.0
    words: bool = False

    def fields(self, *, texts: bool = True) -> dict[str, Any]:
        """The request fields, only those that differ from the server's defaults; for
        chats (``texts=False``) without ``words``, which only texts take."""
        fields: dict[str, Any] = {}
        if self.entropy:
            fields["return_entropy"] = True
        if self.min_k:
            fields["min_k"] = True
            fields["min_k_percent"] = self.min_k_percent
        if self.words and texts:
            fields["words"] = True
        return fields


class _CommonFields(TypedDict, total=False):
    model: str | None
    return_tokens: bool
    top_k: int
    overflow: Overflow
    stride: int | None
    reference: str | None
    distribution: Distribution | None


class TextFields(_CommonFields, total=False):
    """Keyword options of ``score_text`` (see ``ScoreOptions``)."""

    prepend_bos: bool


class ChatFields(_CommonFields, total=False):
    """Keyword options of ``score_chat`` (see ``ScoreOptions``)."""

    score_roles: Sequence[str] | None
    include_end_of_turn: bool


@dataclass(frozen=True)
class ScoreOptions:
    """What a scoring request asks for besides its texts or conversations.

    ``top_k`` (0-20) alternatives per token need ``return_tokens``; ``overflow`` is
    ``error``, ``truncate`` or ``sliding_window`` (windows advance by ``stride`` tokens);
    ``reference`` names a server-side profile (adds ``percentile``/``is_outlier``).
    ``prepend_bos`` applies to texts only; ``score_roles`` (server default
    ``["assistant"]``) and ``include_end_of_turn`` to conversations only, so one options
    object serves a dataset holding both.
    """

    model: str | None = None  # None: the server's default model
    return_tokens: bool = False
    top_k: int = 0
    overflow: Overflow = "error"
    stride: int | None = None
    reference: str | None = None
    distribution: Distribution | None = None
    prepend_bos: bool = False
    score_roles: Sequence[str] | None = None
    include_end_of_turn: bool = False

    def with_fields(self, fields: Mapping[str, Any]) -> ScoreOptions:
        """A copy with ``fields`` (keyword options) replaced."""
        return dataclasses.replace(self, **fields) if fields else self


def options_with(options: ScoreOptions | None, fields: Mapping[str, Any]) -> ScoreOptions:
    """``options`` (or the defaults) with the keyword ``fields`` applied on top."""
    return (options or ScoreOptions()).with_fields(fields)


@dataclass(frozen=True)
class ApiCall(Generic[T]):
    """One request, ready to send: ``body`` is the REST JSON (also the gRPC request's
    fields) and ``parse`` turns the REST JSON answer into its typed result."""

    method: Literal["GET", "POST"]
    path: str
    body: dict[str, Any] | None
    parse: Callable[[Any], T]


def _text_list(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _model_field(model: str | None) -> dict[str, str]:
    """The request's ``model``; left out for the server's default (the model named
    ``default``, or its only model)."""
    return {} if model is None else {"model": model}


def _common(options: ScoreOptions, *, texts: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        **_model_field(options.model),
        "return_tokens": options.return_tokens,
        "top_k": options.top_k,
        "overflow": options.overflow,
    }
    if options.stride is not None:
        body["stride"] = options.stride
    if options.reference is not None:
        body["reference"] = options.reference
    if options.distribution is not None:
        body.update(options.distribution.fields(texts=texts))
    return body


def score_text(
    texts: str | Sequence[str], options: ScoreOptions | None = None
) -> ApiCall[ScoreResponse]:
    """``POST /v1/score/text``: a single string is one text."""
    options = options or ScoreOptions()
    body = {
        "texts": _text_list(texts),
        **_common(options, texts=True),
        "prepend_bos": options.prepend_bos,
    }
    return ApiCall("POST", "/v1/score/text", body, ScoreResponse.from_json)


def conversation_list(conversations: Sequence[Conversation] | Conversation) -> list[list[Any]]:
    """A list of conversations, each a list of messages (copied as dicts). A single
    conversation (a sequence of message mappings) is wrapped; anything else is passed on
    for the server to judge."""
    items: list[Any] = list(conversations)
    if items and isinstance(items[0], Mapping):
        items = [items]  # one conversation
    return [
        [dict(m) if isinstance(m, Mapping) else m for m in conv]
        if isinstance(conv, list | tuple)
        else conv
        for conv in items
    ]


def score_chat(
    conversations: Sequence[Conversation] | Conversation, options: ScoreOptions | None = None
) -> ApiCall[ScoreResponse]:
    """``POST /v1/score/chat``: a single conversation (a list of message dicts) is
    accepted as well as a list of them."""
    options = options or ScoreOptions()
    body = {
        "conversations": conversation_list(conversations),
        **_common(options, texts=False),
        "include_end_of_turn": options.include_end_of_turn,
    }
    if options.score_roles is not None:
        body["score_roles"] = list(options.score_roles)
    return ApiCall("POST", "/v1/score/chat", body, ScoreResponse.from_json)


def score_continuations(
    context: str,
    continuations: Sequence[str],
    *,
    model: str | None,
    return_tokens: bool,
    prepend_bos: bool | None = None,
) -> ApiCall[ContinuationResponse]:
    """``POST /v1/score/continuations`` (``prepend_bos`` None: the server's default, the
    BOS where the model's tokenizer adds one)."""
    body: dict[str, Any] = {
        **_model_field(model),
        "context": context,
        "continuations": list(continuations),
        "return_tokens": return_tokens,
    }
    if prepend_bos is not None:
        body["prepend_bos"] = prepend_bos
    return ApiCall("POST", "/v1/score/continuations", body, ContinuationResponse.from_json)


def compare(
    models: Sequence[str], texts: str | Sequence[str], *, token_level: bool, return_tokens: bool
) -> ApiCall[CompareResponse]:
    """``POST /v1/score/compare``."""
    body = {
        "models": list(models),
        "texts": _text_list(texts),
        "token_level": token_level,
        "return_tokens": return_tokens,
    }
    return ApiCall("POST", "/v1/score/compare", body, CompareResponse.from_json)


def _model_cards(body: Any) -> list[ModelCard]:
    return [ModelCard.from_json(m) for m in body["data"]]


def models() -> ApiCall[list[ModelCard]]:
    """``GET /v1/models``."""
    return ApiCall("GET", "/v1/models", None, _model_cards)


def _as_dict(body: Any) -> dict[str, Any]:
    return dict(body)


def completions(body: Mapping[str, Any]) -> ApiCall[dict[str, Any]]:
    """``POST /v1/completions`` (OpenAI legacy shape), answered as parsed JSON."""
    return ApiCall("POST", "/v1/completions", dict(body), _as_dict)
