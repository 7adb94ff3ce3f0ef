"""The OpenAI-compatible door: legacy ``/v1/completions`` with echo and logprobs (what
lm-evaluation-harness ``local-completions`` and the ``openai`` client speak), and vLLM's
``/tokenize``, ``/detokenize`` and ``/tokenizer_info``.

Completions go through the same engine, batcher, limits, auth and metrics as
``/v1/score/*``. At most one token is generated, greedily; its top-logprobs entry is the
very float reported as its logprob, since harnesses test greediness by equality.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.api.deps import EngineDep
from service.api.errors_http import (
    MODEL_LOOKUP_ERRORS,
    SCORING_ERRORS,
    TOKENIZER_ERRORS,
    error_responses,
)
from service.api.observe import CLIENT_CLOSED
from service.api.openai_logprobs import LegacyLogprobsBuilder, prompt_logprobs, token_id_name
from service.api.openai_schemas import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from service.api.responses import unless_disconnected
from service.errors import InvalidRequest
from service.sequences import RunOptions, ScoredSequence, SequenceScores
from service.served import PromptOutcome, ServedModel
from service.settings import Settings
from service.token_text import next_piece
from service.validation import check_conversation, check_length, check_token_ids

# With ``stream: true`` the 200 answer is server-sent events. Before OpenAPI 3.2 a stream's
# ``schema`` describes one event: its ``data`` is a chunk (a CompletionResponse without
# usage, as JSON) or ``[DONE]``.
_STREAM_DOCUMENTED: dict[str, Any] = {
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "description": "A chunk (JSON), or [DONE]."}
                },
            }
        }
    },
    "description": "The completion (JSON), or with stream: true its server-sent events.",
}


_TOKENIZER_ERRORS = error_responses(TOKENIZER_ERRORS)


def install(app: FastAPI, guarded: Sequence[Depends]) -> None:
    """Register the OpenAI-compatible routes on ``app``, each behind ``guarded``."""
    deps = list(guarded)
    app.add_api_route(
        "/v1/completions",
        completions,
        methods=["POST"],
        dependencies=deps,
        response_model=CompletionResponse,
        responses={**error_responses(SCORING_ERRORS), 200: _STREAM_DOCUMENTED},
    )
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


async def completions(body: CompletionRequest, request: Request, engine: EngineDep) -> Response:
    """Legacy completions: echo + logprobs scoring, and at most one greedy token."""
    options = completion_options(body)
    prompts = prompt_list(body.prompt)
    special = body.add_special_tokens
    work = engine.score_prompts(body.model, prompts, options, add_special_tokens=special)
    outcome = await unless_disconnected(request, work)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    response = completion_response(body, outcome)
    headers = outcome.timing.headers()
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        events = completion_events(response, include_usage=usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return JSONResponse(response.model_dump(mode="json"), headers=headers)


async def tokenize(body: TokenizeRequest, engine: EngineDep) -> TokenizeResponse:
    """Token ids of a prompt, or of chat messages rendered with the model's template."""
    _check_tokenize_limits(body, engine.settings)
    model = engine.get_model(body.model)
    return await model.prepare(_tokenize, model, body)


async def detokenize(body: DetokenizeRequest, engine: EngineDep) -> DetokenizeResponse:
    """The text of token ids (special tokens kept)."""
    model = engine.get_model(body.model)
    tokenizer = model.backend.tokenizer
    check_length(body.tokens, engine.settings.max_chars_per_text, "tokens")
    check_token_ids([body.tokens], len(tokenizer), params=["tokens"])
    decode = functools.partial(tokenizer.decode, clean_up_tokenization_spaces=False)
    text = await model.prepare(decode, body.tokens)
    return DetokenizeResponse(prompt=str(text))


async def tokenizer_info(engine: EngineDep, model: str | None = None) -> dict[str, Any]:
    """The tokenizer's special tokens and chat template, as vLLM reports them."""
    return _tokenizer_info(engine.get_model(model))


def prompt_list(prompt: Any) -> list[str | list[int]]:
    """OpenAI's four prompt shapes as a list of prompts (texts or token-id lists)."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def completion_options(body: CompletionRequest) -> RunOptions:
    """What to compute; refuses sampling, which a scoring server does not do."""
    generate = (1 if body.max_tokens is None else body.max_tokens) > 0
    if generate and body.temperature not in (None, 0):
        raise InvalidRequest(
            "only greedy decoding is served: use temperature 0 (or max_tokens 0 to only score)",
            param="temperature",
        )
    if generate and body.top_p not in (None, 1):
        raise InvalidRequest("only greedy decoding is served: top_p must be 1", param="top_p")
    if generate:
        _refuse_steering(body)
    want = max(body.logprobs or 0, body.prompt_logprobs or 0, 1 if generate else 0)
    return RunOptions(
        top_k=want,
        with_ranks=body.prompt_logprobs is not None,
        next_token=generate,
        offer_overflow=False,
    )


# Fields (OpenAI's and vLLM's) that would change which token is generated, with the value
# that changes nothing. Anything else would be a silently wrong answer: refused instead.
_NEUTRAL_STEERING: dict[str, Any] = {
    "logit_bias": {},
    "allowed_token_ids": None,
    "bad_words": [],
    "repetition_penalty": 1,
    "min_tokens": 0,
    "suffix": "",
}


def _refuse_steering(body: CompletionRequest) -> None:
    """Refuses a steer of the generated token this server does not apply. (OpenAI's
    presence and frequency penalties count generated tokens only: none before the one.)"""
    extra = body.model_extra or {}
    for name, neutral in _NEUTRAL_STEERING.items():
        value = extra.get(name)
        if value is not None and value != neutral:
            raise InvalidRequest(
                f"{name} is not applied to the generated token here: leave it out, or score "
                "candidates with max_tokens 0 (or POST /v1/score/continuations)",
                param=name,
            )


def completion_response(body: CompletionRequest, outcome: PromptOutcome) -> CompletionResponse:
    choices = [
        _choice(i, body, outcome.model, seq, scores)
        for i, (seq, scores) in enumerate(zip(outcome.sequences, outcome.scores, strict=True))
    ]
    prompt_tokens = sum(len(seq.token_ids) for seq in outcome.sequences)
    generated = sum(1 for _ in choices) if _generates(body) else 0
    return CompletionResponse(
        id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=outcome.model.name,
        choices=choices,
        usage=CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=generated,
            total_tokens=prompt_tokens + generated,
        ),
    )


def completion_events(response: CompletionResponse, *, include_usage: bool) -> Iterator[str]:
    """``response`` as OpenAI's server-sent events: one chunk per choice, whole (a scoring
    server has every score at once), then a usage chunk with no choices when asked, then
    ``[DONE]``. With ``include_usage`` the other chunks carry ``usage: null``, as OpenAI's do."""
    head = response.model_dump(mode="json", exclude={"choices", "usage"})
    usage = {"usage": None} if include_usage else {}
    for choice in response.choices:
        chunk = {**head, "choices": [choice.model_dump(mode="json")], **usage}
        yield f"data: {json.dumps(chunk)}\n\n"
    if include_usage:
        last = {**head, "choices": [], "usage": response.usage.model_dump(mode="json")}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


def _generates(body: CompletionRequest) -> bool:
    return (1 if body.max_tokens is None else body.max_tokens) > 0


def _choice(
    index: int,
    body: CompletionRequest,
    model: ServedModel,
    seq: ScoredSequence,
    scores: SequenceScores,
) -> CompletionChoice:
    name = token_id_name if body.return_tokens_as_token_ids else model.token_text
    builder = LegacyLogprobsBuilder(name, body.logprobs or 0)
    if body.echo:
        _echo(builder, body, model, seq, scores)
    finish_reason = "length"
    generated: list[int] = []
    generated_from = len(builder.text)
    if _generates(body):
        assert scores.next_top_ids is not None and scores.next_top_logprobs is not None
        token = int(scores.next_top_ids[0])
        generated.append(token)
        tokenizer = model.backend.tokenizer
        # A generated special token (end of turn, end of text) adds no text, as in vLLM and
        # OpenAI, where special tokens are skipped in the output.
        special = token in model.special_ids
        piece = "" if special else next_piece(tokenizer, seq.token_ids, token)
        builder.add(
            token,
            token_id_name(token) if body.return_tokens_as_token_ids else piece,
            float(scores.next_top_logprobs[0]),
            scores.next_top_ids,
            scores.next_top_logprobs,
            text=piece,
        )
        if token == tokenizer.eos_token_id:
            finish_reason = "stop"
    text = builder.text
    if generated:
        # A stop string in the generated text ends it at its earliest occurrence (OpenAI:
        # finish_reason "stop"). Only the generated text is searched, never the echoed
        # prompt, and the order of the stops does not matter.
        cuts = [cut for stop in _stops(body) if (cut := text.find(stop, generated_from)) >= 0]
        if cuts:
            text, finish_reason = text[: min(cuts)], "stop"
    prompt_k = body.prompt_logprobs
    return CompletionChoice(
        index=index,
        text=text,
        logprobs=builder.lists if body.logprobs is not None else None,
        finish_reason=finish_reason,
        prompt_logprobs=None
        if prompt_k is None
        else prompt_logprobs(seq, scores, prompt_k, model.token_text, model.backend.tokenizer),
        prompt_token_ids=seq.input_ids if body.return_token_ids else None,
        token_ids=generated if body.return_token_ids else None,
    )


def _echo(
    builder: LegacyLogprobsBuilder,
    body: CompletionRequest,
    model: ServedModel,
    seq: ScoredSequence,
    scores: SequenceScores,
) -> None:
    """The prompt's tokens into ``builder``. A special token the tokenizer added (a BOS)
    holds no character of the prompt: it shows its own text, as in vLLM, and adds none."""
    for j, (start, end) in enumerate(seq.offsets):
        p = j + seq.shift
        token = seq.token_ids[j]
        piece = seq.text[start:end]
        shown = piece
        if body.return_tokens_as_token_ids:
            shown = token_id_name(token)
        elif not piece and token in model.special_ids:
            shown = model.token_text(token)
        logprob = float(scores.logprobs[p]) if p > 0 else None
        builder.add(token, shown, logprob, scores.top_ids[p], scores.top_logprobs[p], text=piece)


def _stops(body: CompletionRequest) -> list[str]:
    if body.stop is None:
        return []
    return [body.stop] if isinstance(body.stop, str) else list(body.stop)


def _check_tokenize_limits(body: TokenizeRequest, settings: Settings) -> None:
    """The scoring routes' size limits, for a prompt or chat messages to tokenize."""
    if body.prompt is not None:
        check_length(body.prompt, settings.max_chars_per_text, "prompt")
    contents = [str(message.get("content") or "") for message in body.messages or []]
    check_conversation(contents, settings, "messages")


def _tokenize(model: ServedModel, body: TokenizeRequest) -> TokenizeResponse:
    tokenizer = model.backend.tokenizer
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequest("give exactly one of prompt or messages", param="prompt")
    if body.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest(f"model {model.name!r} has no chat template", param="messages")
        try:
            text = tokenizer.apply_chat_template(
                body.messages, tokenize=False, add_generation_prompt=body.add_generation_prompt
            )
        except Exception as exc:
            raise InvalidRequest(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from exc
        special = bool(body.add_special_tokens)
    else:
        text = body.prompt
        special = True if body.add_special_tokens is None else body.add_special_tokens
    try:  # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            "not valid Unicode text (lone surrogate)",
            param="prompt" if body.messages is None else "messages",
        ) from exc
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    return TokenizeResponse(
        count=len(ids),
        max_model_len=model.context,
        tokens=ids,
        token_strs=tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None,
    )


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
