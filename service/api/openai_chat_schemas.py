"""Request and response models of ``POST /v1/chat/completions``, in the shapes the ``openai``
client sends and parses, with vLLM's scoring extensions (``prompt_logprobs``, ``echo``,
``add_generation_prompt``, ``continue_final_message``, ``chat_template_kwargs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from service.api.openai_schemas import (
    CompletionUsage,
    IgnoreEos,
    IncludeStopString,
    OpenAIRequest,
    PromptLogprobs,
    StopTokenIds,
    StreamOptions,
    TokenIdsIfAsked,
    check_stop,
)
from service.chat_prompt import ChatPromptOptions
from service.schemas import MAX_TOP_K


class TextPart(BaseModel):
    """One part of a message's content; only text parts are served."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: StrictStr


class ChatCompletionMessage(OpenAIRequest):
    """A message as OpenAI's chat API takes it; list content is its text parts joined by
    newlines (as vLLM joins them)."""

    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatRendering(OpenAIRequest):
    """How a request's messages are rendered by the model's own chat template: the fields
    vLLM's chat requests share (``/v1/chat/completions``, ``/tokenize`` with messages)."""

    model_config = ConfigDict(extra="allow")

    add_generation_prompt: bool = Field(
        True, description="End the rendering with the template's cue for the assistant."
    )
    continue_final_message: bool = Field(
        False,
        description="Leave the final message open (no end of turn), to continue or score it.",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Extra variables for the model's own template (e.g. enable_thinking)."
    )
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _one_ending(self) -> ChatRendering:
        if self.add_generation_prompt and self.continue_final_message:
            raise PydanticCustomError(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true",
                {"param": "continue_final_message"},
            )
        return self

    def rendering(self, add_special_tokens: bool) -> ChatPromptOptions:
        """The template options this request asks for; its undeclared fields are passed on
        so that one steering the rendering (``chat_template``) is refused, not ignored."""
        return ChatPromptOptions(
            add_generation_prompt=self.add_generation_prompt,
            continue_final_message=self.continue_final_message,
            add_special_tokens=add_special_tokens,
            template_kwargs=self.chat_template_kwargs or {},
            request_fields=frozenset(self.model_extra or {}),
        )


class ChatCompletionRequest(ChatRendering):
    """``POST /v1/chat/completions``. Greedy only, at most one generated token: the point is
    the logprobs of the conversation (``prompt_logprobs``) and of the next token."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None  # omitted: "default", or the only model served (as vLLM)
    messages: list[ChatCompletionMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(
        None, ge=0, le=1, description="0 (score only) or 1 (one greedy token); default 1."
    )
    max_completion_tokens: int | None = Field(None, ge=0, le=1, description="As max_tokens.")
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    logprobs: bool = Field(False, description="Logprobs (nats) of the generated token.")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_K, description="Alternatives per generated token (needs logprobs)."
    )
    stream: bool = Field(
        False, description="Server-sent chat.completion.chunk events (one whole chunk), [DONE]."
    )
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # vLLM's extensions, in its shapes.
    stop_token_ids: StopTokenIds = None
    include_stop_str_in_output: IncludeStopString = False
    ignore_eos: IgnoreEos = False
    echo: bool = Field(
        False,
        description="vLLM's: the message's content starts with the last message's content "
        "when that message has the answering role (assistant).",
    )
    prompt_logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_K,
        description="vLLM's: per position of the rendered conversation, its token (with rank) "
        "and this many alternatives, in prompt_logprobs (nats; as vLLM, at the top level of "
        "the response, and in choices[0] as well).",
    )
    add_special_tokens: bool = Field(
        False, description="Also add the tokenizer's special tokens (the template has its own)."
    )
    return_token_ids: bool = Field(
        False, description="Also return prompt_token_ids and the generated token_ids."
    )
    return_tokens_as_token_ids: bool = Field(
        False, description='Name tokens in logprobs as "token_id:<id>" rather than by text.'
    )

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: Any) -> Any:
        return check_stop(value)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        problem = None
        if self.stream_options is not None and not self.stream:
            problem = ("stream_options", "stream_options can only be set when stream is true")
        elif self.top_logprobs is not None and not self.logprobs:
            problem = ("top_logprobs", "top_logprobs needs logprobs set to true")
        if problem:
            raise PydanticCustomError(problem[0], problem[1], {"param": problem[0]})
        return self

    @property
    def generates(self) -> bool:
        """Whether one token is generated (max_completion_tokens, else max_tokens, else 1)."""
        limit = self.max_completion_tokens
        if limit is None:
            limit = self.max_tokens
        return limit is None or limit > 0


class TopLogprob(BaseModel):
    """A token's logprob (nats) with its text and UTF-8 bytes, as OpenAI's chat API gives."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["length", "stop"]
    # The prompt's fields as completions has them per choice (this door's first shape).
    prompt_logprobs: PromptLogprobs = None
    prompt_token_ids: TokenIdsIfAsked = None
    token_ids: TokenIdsIfAsked = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    # vLLM's place for the conversation's fields: one prompt, whatever the choices.
    prompt_logprobs: PromptLogprobs = None
    prompt_token_ids: TokenIdsIfAsked = None
