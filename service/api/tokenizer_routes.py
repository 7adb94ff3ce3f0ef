"""vLLM's tokenizer endpoints: ``POST /tokenize`` (a prompt, or chat messages rendered with
the model's template), ``POST /detokenize`` and ``GET /tokenizer_info``, in vLLM's shapes,
so lm-evaluation-harness can use the server's tokenizer (``tokenizer_backend=remote``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import Response

from service.api.deps import EngineDep
from service.api.errors_http import MODEL_LOOKUP_ERRORS, TOKENIZER_ERRORS, error_responses
from service.api.json_body import json_response
from service.api.openai_chat import chat_messages
from service.api.openai_chat_schemas import ChatCompletionMessage
from service.api.tokenizer_schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from service.chat_prompt import chat_prompt_sequence
from service.errors import InvalidRequest
from service.served import ServedModel
from service.settings import Settings
from service.validation import check_conversation, check_length, check_token_ids

_TOKENIZER_ERRORS = error_responses(TOKENIZER_ERRORS)


def install(app: FastAPI, guarded: Sequence[Depends]) -> None:
    """Register the tokenizer routes on ``app``, each behind ``guarded``."""
    deps = list(guarded)
    for path, endpoint, response in (
        ("/tokenize", tokenize, TokenizeResponse),
        ("/detokenize", detokenize, DetokenizeResponse),
    ):
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            dependencies=deps,
            response_model=response,
            responses=_TOKENIZER_ERRORS,
        )
    app.add_api_route(
        "/tokenizer_info",
        tokenizer_info,
        methods=["GET"],
        dependencies=deps,
        responses=error_responses(MODEL_LOOKUP_ERRORS),
    )


async def tokenize(body: TokenizeRequest, engine: EngineDep) -> Response:
    """Token ids of a prompt, or of chat messages rendered with the model's template
    (a long text's many ids are encoded off the event loop)."""
    _check_tokenize_limits(body, engine.settings)
    model = engine.get_model(body.model)
    return await json_response(await engine.tokenizer_call(model, _tokenize, model, body))


async def detokenize(body: DetokenizeRequest, engine: EngineDep) -> DetokenizeResponse:
    """The text of token ids (special tokens kept)."""
    model = engine.get_model(body.model)
    tokenizer = model.backend.tokenizer
    check_length(body.tokens, engine.settings.max_chars_per_text, "tokens")
    check_token_ids([body.tokens], len(tokenizer), params=["tokens"])
    decode = functools.partial(tokenizer.decode, clean_up_tokenization_spaces=False)
    text = await engine.tokenizer_call(model, decode, body.tokens)
    return DetokenizeResponse(prompt=str(text))


async def tokenizer_info(engine: EngineDep, model: str | None = None) -> dict[str, Any]:
    """The tokenizer's special tokens and chat template, as vLLM reports them."""
    return _tokenizer_info(engine.get_model(model))


def _check_tokenize_limits(body: TokenizeRequest, settings: Settings) -> None:
    """The scoring routes' size limits, for a prompt or chat messages to tokenize."""
    if body.prompt is not None:
        check_length(body.prompt, settings.max_chars_per_text, "prompt")
    contents = [message.text() for message in body.messages or []]
    check_conversation(contents, settings, "messages")


def _tokenize(model: ServedModel, body: TokenizeRequest) -> TokenizeResponse:
    tokenizer = model.backend.tokenizer
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequest("give exactly one of prompt or messages", param="prompt")
    if body.messages is not None:
        ids = _chat_ids(tokenizer, body, body.messages)
    else:
        ids = _prompt_ids(tokenizer, body.prompt or "", body.add_special_tokens is not False)
    return TokenizeResponse(
        count=len(ids),
        max_model_len=model.context,
        tokens=ids,
        token_strs=tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None,
    )


def _chat_ids(
    tokenizer: Any, body: TokenizeRequest, messages: list[ChatCompletionMessage]
) -> list[int]:
    """The ids of the messages as the chat door renders and tokenizes them."""
    rendering = body.rendering(add_special_tokens=bool(body.add_special_tokens))
    seq = chat_prompt_sequence(tokenizer, chat_messages(messages, body.tools), rendering)
    return list(seq.token_ids)


def _prompt_ids(tokenizer: Any, prompt: str, add_special_tokens: bool) -> list[int]:
    try:  # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest("not valid Unicode text (lone surrogate)", param="prompt") from exc
    return list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])


def _tokenizer_info(model: ServedModel) -> dict[str, Any]:
    tokenizer = model.backend.tokenizer
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "model": model.name,
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "model_max_length": model.context,
        "vocab_size": len(tokenizer),
    }
