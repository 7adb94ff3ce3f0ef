"""``POST /v1/score/text`` and ``/v1/score/chat``: requests, per-text results, responses.

Units: every logprob is a natural log (nats); ``mean_nll`` is nats per scored token;
``bits_per_byte``/``bits_per_char`` are base-2 bits per UTF-8 byte / Unicode code point
of the scored tokens' text.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictStr,
    model_serializer,
)
from pydantic.json_schema import SkipJsonSchema

from service.schemas.fields import (
    MAX_TOP_K,
    STRICT_REQUEST,
    DeclaredSchema,
    NonEmptyText,
    Overflow,
    Text,
    is_none,
    served_model_field,
)


class _Request(BaseModel):
    model_config = STRICT_REQUEST

    model: str | None = served_model_field()
    return_tokens: bool = Field(False, description="Return per-token detail.")
    top_k: int = Field(
        0, ge=0, le=MAX_TOP_K, description="Alternatives per token (0 to 20); needs return_tokens."
    )
    overflow: Overflow = Field(
        "error",
        description="Text longer than the context: 'error' (422), 'truncate' (keep the first "
        "tokens) or 'sliding_window' (score every token with up to a context of history).",
    )
    stride: int | None = Field(
        None,
        ge=1,
        description="Tokens a sliding window advances by; default half the context. "
        "Must be below the model's context.",
    )

    return_entropy: bool = Field(
        False,
        description="Add the entropy of the model's full next-token distribution (nats): "
        "per text mean_entropy and entropy_bits_per_char, per token entropy (with "
        "return_tokens). Costs two more passes over the vocabulary per position.",
    )
    min_k: bool = Field(
        False,
        description="Add the membership (contamination) scores min_k_logprob (Min-K% Prob, "
        "nats) and min_k_plus_plus (Min-K%++) over the min_k_percent least likely tokens.",
    )
    min_k_percent: float = Field(
        20.0, gt=0, le=100, description="k for min_k, in percent of the scored tokens."
    )

    @property
    def with_stats(self) -> bool:
        """Whether the full distribution's statistics are needed."""
        return self.return_entropy or self.min_k


class TextScoreRequest(_Request):
    """``POST /v1/score/text``."""

    texts: list[NonEmptyText] = Field(..., min_length=1, description="Texts to score.")
    prepend_bos: bool = Field(
        False,
        description="Condition the first token on the model's BOS (EOS if none) so it is scored.",
    )
    reference: str | None = Field(
        None, description="A reference profile (see --reference): adds percentile and is_outlier."
    )
    words: bool = Field(
        False,
        description="Add per-word scores: the text cut into words (offsets tile it), each "
        "with its plain logprob (sum over its tokens) and the beginning-of-word corrected "
        "logprob and surprisal (Pimentel & Meister, 2024). Texts only.",
    )


class ChatMessage(BaseModel):
    """One conversation turn."""

    model_config = ConfigDict(extra="allow")

    role: Text
    content: Text


class ChatScoreRequest(_Request):
    """``POST /v1/score/chat``."""

    conversations: list[Annotated[list[ChatMessage], Field(min_length=1)]] = Field(
        ..., min_length=1, description="Conversations, each a list of messages."
    )
    score_roles: list[StrictStr] = Field(
        default_factory=lambda: ["assistant"],
        min_length=1,
        description="Roles whose message content is scored.",
    )
    include_end_of_turn: bool = Field(
        False, description="Also score the template's end-of-turn tokens after scored messages."
    )
    reference: str | None = Field(
        None, description="A reference profile (see --reference): adds percentile and is_outlier."
    )


class TopToken(BaseModel):
    id: int
    text: str
    logprob: float = Field(description="Natural log probability.")


class TokenScore(DeclaredSchema):
    """One token. ``message_index`` and ``scored`` appear for chat tokens only (the index is
    null for template text outside any message)."""

    id: int
    text: str
    start: int = Field(description="Character offset (code points) where the token starts.")
    end: int
    logprob: float | None = Field(description="log p(token | all before it), nats; null first.")
    rank: int | None = Field(description="1 for the argmax token.")
    top: list[TopToken] | None = None
    message_index: int | None = None
    scored: bool | None = None
    entropy: float | None = Field(
        None,
        exclude_if=is_none,
        description="With return_entropy: entropy of the distribution this token was drawn "
        "from, nats (null for the first token).",
    )
    # Whether alternatives were asked for (top_k > 0): then ``top`` is shown, null for the
    # first token; otherwise it is left out.
    with_top: SkipJsonSchema[bool] = Field(False, exclude=True)

    @model_serializer(mode="wrap")
    def _drop_fields_not_asked_for(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            if not self.with_top:
                data.pop("top", None)
            if self.scored is None:
                data.pop("message_index", None)
                data.pop("scored", None)
        return data


class WordScore(BaseModel):
    """One word. ``start``/``end`` are character offsets; the words of a text tile it."""

    text: str
    start: int
    end: int
    num_tokens: int
    logprob: float | None = Field(
        description="Sum of the word's token logprobs, nats; null if a token has no context."
    )
    logprob_corrected: float | None = Field(
        description="log p(word | context) with the beginning-of-word correction, nats; null "
        "where words are not separated by whitespace (e.g. between CJK characters)."
    )
    surprisal_bits: float | None = Field(description="-logprob_corrected / ln 2, bits.")


class MessageScore(BaseModel):
    index: int
    role: str
    scored: bool
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None


# TextResult's fields present only when a request asks for them.
ON_REQUEST = frozenset(
    {"percentile", "is_outlier", "mean_entropy", "entropy_bits_per_char", "min_k_logprob",
     "min_k_plus_plus"}
)  # fmt: skip


class TextResult(DeclaredSchema):
    """One text's (or conversation's) scores. What a request asks for beyond the plain
    scores (a reference, entropy, min_k) is present once asked, null where there is no
    value (no scored token, as ``mean_nll``), and absent otherwise."""

    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float = Field(description="Sum of scored token logprobs, nats.")
    mean_nll: float | None = Field(description="-sum_logprob / num_scored_tokens, nats.")
    ppl: float | None = Field(description="exp(mean_nll).")
    bits_per_byte: float | None
    bits_per_char: float | None
    truncated: bool = False
    tokens: list[TokenScore] | None = Field(None, exclude_if=is_none)
    words: list[WordScore] | None = Field(None, exclude_if=is_none)
    messages: list[MessageScore] | None = Field(None, exclude_if=is_none)
    percentile: float | None = Field(
        None, description="With a reference: 0-100 in its distribution; null if nothing is scored."
    )
    is_outlier: bool | None = Field(
        None, description="With a reference: above its threshold; null if nothing is scored."
    )
    mean_entropy: float | None = Field(
        None,
        description="With return_entropy: mean entropy of the scored positions, nats.",
    )
    entropy_bits_per_char: float | None = Field(
        None,
        description="With return_entropy: total entropy of the scored positions in bits, per "
        "character of the scored text.",
    )
    min_k_logprob: float | None = Field(
        None,
        description="With min_k: Min-K% Prob, the mean logprob (nats) of the k% least likely "
        "scored tokens; closer to 0 looks more like training data.",
    )
    min_k_plus_plus: float | None = Field(
        None,
        description="With min_k: Min-K%++, the mean of the k% lowest logprobs standardised by "
        "the model's distribution at each position (unitless); higher looks more like "
        "training data.",
    )
    # The on-request fields this result was asked for (``mark_asked``).
    _asked: set[str] = PrivateAttr(default_factory=set)

    def mark_asked(self, *fields: str) -> None:
        """Serialise ``fields`` even when null: the request asked for them."""
        self._asked = self._asked | set(fields)  # a new set: a model_copy shares the old

    @model_serializer(mode="wrap")
    def _drop_fields_not_asked_for(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in ON_REQUEST:
                if name in data and data[name] is None and name not in self._asked:
                    del data[name]
        return data


class Aggregate(BaseModel):
    """Token-weighted over all results: exp(total NLL / total scored tokens)."""

    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float | None
    ppl: float | None


class Usage(BaseModel):
    prompt_tokens: int


class ScoreResponse(BaseModel):
    model: str
    model_revision: str
    results: list[TextResult]
    aggregate: Aggregate
    usage: Usage
