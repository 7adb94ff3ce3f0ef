"""Request and response models of vLLM's tokenizer endpoints (``POST /tokenize``,
``POST /detokenize``), in vLLM's shapes. Chat messages take the chat door's message model
and rendering fields, so ``/tokenize`` counts the tokens ``/v1/chat/completions`` scores."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictInt, StrictStr

from service.api.openai_chat_schemas import ChatCompletionMessage, ChatRendering


class TokenizeRequest(ChatRendering):
    """``POST /tokenize``: a prompt, or chat messages rendered with the model's template
    (the rendering fields apply to messages only)."""

    model: str | None = None  # omitted: "default", or the only model served (as vLLM)
    prompt: StrictStr | None = None
    messages: list[ChatCompletionMessage] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = None  # default: true for a prompt, false for messages
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model: str | None = None  # omitted: "default", or the only model served (as vLLM)
    tokens: list[StrictInt]


class DetokenizeResponse(BaseModel):
    prompt: str
