"""Request and response models of the OpenAI-compatible endpoints (legacy completions,
and vLLM's tokenizer endpoints), in the shapes those clients send and parse."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.schemas import MAX_TOP_K

TokenIds = Annotated[list[StrictInt], Field(min_length=1)]
Text = Annotated[StrictStr, Field(min_length=1)]
Prompt = Text | TokenIds | Annotated[list[Text | TokenIds], Field(min_length=1)]


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _prompt_problem(value: Any) -> str | None:
    """Why one prompt (a text or a token-id list) is invalid, or None."""
    if isinstance(value, str):
        if not value:
            return "is an empty string"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (lone surrogate)"
        return None
    if _is_token_ids(value):
        return None
    return "must be a non-empty string or a non-empty list of integer token ids"


def check_prompt(value: Any) -> Any:
    """The prompt's shape, checked before the union so an error names ``prompt[i]`` rather
    than one of pydantic's union members (``prompt.constrained-str``)."""
    if isinstance(value, str) or _is_token_ids(value):
        problem = _prompt_problem(value)
        where = "prompt"
    elif isinstance(value, list) and value:
        found = ((i, _prompt_problem(p)) for i, p in enumerate(value))
        index, problem = next(((i, p) for i, p in found if p), (0, None))
        where = f"prompt[{index}]"
    else:
        problem = (
            "must be a string, a list of strings, a list of token ids or a list of token-id lists"
            if value != []
            else "must not be an empty list"
        )
        where = "prompt"
    if problem:
        raise PydanticCustomError(
            "prompt", "{where} {problem}", {"where": where, "problem": problem, "param": where}
        )
    return value


def check_stop(value: Any) -> Any:
    """Refuses an empty stop string, as vLLM does: it would end every text at once."""
    stops = [value] if isinstance(value, str) else value or []
    if any(stop == "" for stop in stops):
        raise ValueError("stop cannot contain an empty string")
    return value


# vLLM's stop extensions, shared by completions and chat completions.
StopTokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]] | None,
    Field(
        description="vLLM's: a generated token among these ends generation with "
        'finish_reason "stop"; its text is kept unless it is a special token.'
    ),
]
IncludeStopString = Annotated[
    bool, Field(description="vLLM's: keep the stop string that ended the text in it.")
]
IgnoreEos = Annotated[
    bool,
    Field(description='vLLM\'s: the end-of-sequence token does not end with "stop".'),
]


class OpenAIRequest(BaseModel):
    """A request (or part of one) in OpenAI's shapes. A field sent as null is "not set", as
    OpenAI and vLLM take it: a client that serialises unset fields (a struct without
    omit-empty, vLLM's own request model dumped whole) sends ``"echo": null`` or
    ``"chat_template": null``. Such a field gets its default, or, if undeclared, counts as
    not sent; a required field is still refused as null."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        required = {name for name, field in cls.model_fields.items() if field.is_required()}
        return {k: v for k, v in data.items() if v is not None or k in required}


class StreamOptions(OpenAIRequest):
    """``stream_options``: with ``include_usage``, a last chunk carries the usage."""

    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's; accepted, every chunk here is whole


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions``. Sampling is greedy only: this server scores text, and
    generates at most one token."""

    # Clients send many optional OpenAI fields; the ones that change nothing here are accepted.
    model_config = ConfigDict(extra="allow")

    model: str | None = None  # omitted: "default", or the only model served (as vLLM)
    prompt: Prompt
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_K)
    max_tokens: int | None = Field(
        None, ge=0, le=1, description="0 (score only) or 1 (one greedy token); default 1."
    )
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    best_of: int | None = Field(None, ge=1, le=1)
    stream: bool = Field(
        False,
        description="Server-sent events in OpenAI's framing: one chunk per choice (each whole, "
        "since scores are computed at once), a usage chunk with stream_options.include_usage, "
        "then [DONE].",
    )
    stream_options: StreamOptions | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # vLLM's extensions, in its shapes.
    stop_token_ids: StopTokenIds = None
    include_stop_str_in_output: IncludeStopString = False
    ignore_eos: IgnoreEos = False
    prompt_logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_K,
        description="vLLM's: per prompt position, the prompt token (with its rank) and this "
        "many alternatives, in choices[i].prompt_logprobs (nats). Only when asked: echo with "
        "logprobs does not add them here. -1 (the whole vocabulary) is not served.",
    )
    add_special_tokens: bool = Field(
        True,
        description="Add the special tokens the tokenizer adds to a text prompt (a BOS), as "
        "vLLM does; token-id prompts are taken as given.",
    )
    return_token_ids: bool = Field(
        False, description="Also return prompt_token_ids and the generated token_ids."
    )
    return_tokens_as_token_ids: bool = Field(
        False, description='Name tokens in logprobs as "token_id:<id>" rather than by text.'
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        return check_prompt(value)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: Any) -> Any:
        return check_stop(value)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> CompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(
                "stream_options",
                "stream_options can only be set when stream is true",
                {"param": "stream_options"},
            )
        return self


class LegacyLogprobs(BaseModel):
    """The legacy completions ``logprobs`` object."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


def _absent(value: Any) -> bool:
    return value is None


class PromptLogprob(BaseModel):
    """vLLM's ``Logprob``: natural log (nats), the 1-based rank in the model's distribution
    (1 + the tokens more likely), and the token's text."""

    logprob: float
    rank: int
    decoded_token: str


# vLLM's fields of a choice, present only when asked for: per prompt position (the first
# None), keyed by token id, the prompt token first; and the token ids with return_token_ids.
PromptLogprobs = Annotated[list[dict[str, PromptLogprob] | None] | None, Field(exclude_if=_absent)]
TokenIdsIfAsked = Annotated[list[int] | None, Field(exclude_if=_absent)]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: LegacyLogprobs | None
    finish_reason: Literal["length", "stop"]
    prompt_logprobs: PromptLogprobs = None
    prompt_token_ids: TokenIdsIfAsked = None
    token_ids: TokenIdsIfAsked = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
