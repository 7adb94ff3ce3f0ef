"""The OpenAI-compatible door: legacy ``/v1/completions`` with echo and logprobs (what
lm-evaluation-harness ``local-completions`` and the ``openai`` client speak), and what the
chat door (``openai_chat``) shares with it: greedy-only options, stop strings, the answer
as JSON or server-sent events.

Completions go through the same engine, batcher, limits, auth and metrics as
``/v1/score/*``. At most one token is generated, greedily; its top-logprobs entry is the
very float reported as its logprob, since harnesses test greediness by equality.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response, StreamingResponse

from service.api.deps import EngineDep
from service.api.errors_http import (
    SCORING_ERRORS,
    error_responses,
)
from service.api.json_body import encode, json_response
from service.api.observe import CLIENT_CLOSED
from service.api.openai_logprobs import LegacyLogprobsBuilder, prompt_logprobs, token_id_name
from service.api.openai_schemas import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    StreamOptions,
)
from service.api.responses import unless_disconnected
from service.errors import InvalidRequest
from service.sequences import RunOptions, ScoredSequence, SequenceScores
from service.served import PromptAnswer, PromptOutcome, ServedModel
from service.token_text import next_piece, shown_text
from service.validation import TokenDetails

FinishReason = Literal["length", "stop"]

# With ``stream: true`` the 200 answer is server-sent events. Before OpenAPI 3.2 a stream's
# ``schema`` describes one event: its ``data`` is a chunk (a CompletionResponse without
# usage, as JSON) or ``[DONE]``.
STREAM_DOCUMENTED: dict[str, Any] = {
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


def install(app: FastAPI, guarded: Sequence[Depends]) -> None:
    """Register ``POST /v1/completions`` on ``app``, behind ``guarded``."""
    app.add_api_route(
        "/v1/completions",
        completions,
        methods=["POST"],
        dependencies=list(guarded),
        response_model=CompletionResponse,
        responses={**error_responses(SCORING_ERRORS), 200: STREAM_DOCUMENTED},
    )


async def completions(body: CompletionRequest, request: Request, engine: EngineDep) -> Response:
    """Legacy completions: echo + logprobs scoring, and at most one greedy token."""
    options = completion_options(body)
    prompts = prompt_list(body.prompt)
    special = body.add_special_tokens
    params = prompt_params(body.prompt, len(prompts))
    answer = PromptAnswer(functools.partial(completion_response, body), completion_details(body))
    work = engine.score_prompts(
        body.model, prompts, options, add_special_tokens=special, params=params, answer=answer
    )
    stream = (body.stream_options or StreamOptions()) if body.stream else None
    return await respond(request, work, completion_events, stream)


async def respond(
    request: Request,
    work: Awaitable[PromptOutcome],
    events: Callable[..., Iterator[str]],
    stream: StreamOptions | None,
) -> Response:
    """``work``'s answer (the door's, built within the request) as JSON, or with
    ``stream`` as server-sent ``events``; timing headers either way (499 if the client
    left meanwhile)."""
    outcome = await unless_disconnected(request, work)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    response = outcome.answer
    assert response is not None, "the door gave the engine no PromptAnswer"
    headers = outcome.timing.headers()
    if stream is not None:
        chunks = events(response, include_usage=stream.include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    return await json_response(response, headers)


def completion_details(body: CompletionRequest) -> TokenDetails | None:
    """What the answer holds per prompt token (None: nothing): with echo and logprobs the
    token and its alternatives, with prompt_logprobs the same again."""
    echoed = 1 + body.logprobs if body.echo and body.logprobs is not None else 0
    prompt = prompt_details(body.prompt_logprobs)
    if prompt is None:
        return TokenDetails(echoed, "echo") if echoed else None
    return TokenDetails(echoed + prompt.per_token, "echo" if echoed else prompt.param)


def prompt_details(prompt_logprobs: int | None, copies: int = 1) -> TokenDetails | None:
    """vLLM's prompt_logprobs per prompt token: the token and this many alternatives, in
    ``copies`` places of the answer."""
    if prompt_logprobs is None:
        return None
    return TokenDetails(copies * (1 + prompt_logprobs), "prompt_logprobs")


def prompt_list(prompt: Any) -> list[str | list[int]]:
    """OpenAI's four prompt shapes as a list of prompts (texts or token-id lists)."""
    if _one_prompt(prompt):
        return [prompt if isinstance(prompt, str) else list(prompt)]
    return list(prompt)


def _one_prompt(prompt: Any) -> bool:
    """Whether ``prompt`` is one prompt (a text, or one list of token ids), not a list."""
    return isinstance(prompt, str) or (bool(prompt) and all(isinstance(t, int) for t in prompt))


def prompt_params(prompt: Any, count: int) -> list[str]:
    """How errors name each prompt: ``prompt`` for one text or one id list as sent (its
    ids then ``prompt[j]``), ``prompt[i]`` in a list of them."""
    return ["prompt"] if _one_prompt(prompt) else [f"prompt[{i}]" for i in range(count)]


def completion_options(body: CompletionRequest) -> RunOptions:
    """What to compute for a completion; refuses sampling (see ``greedy_options``)."""
    return greedy_options(
        _generates(body),
        body.temperature,
        body.top_p,
        body.model_extra or {},
        top_k=body.logprobs or 0,
        prompt_k=body.prompt_logprobs,
    )


def greedy_options(
    generate: bool,
    temperature: float | None,
    top_p: float | None,
    extra: dict[str, Any],
    *,
    top_k: int,
    prompt_k: int | None,
) -> RunOptions:
    """What to compute: ``top_k`` alternatives per position, ranks with ``prompt_k``, the
    distribution after the prompt when a token is generated. Sampling, and any field that
    would steer the generated token, is refused: a scoring server generates greedily."""
    if generate and temperature not in (None, 0):
        raise InvalidRequest(
            "only greedy decoding is served: use temperature 0 (or max_tokens 0 to only score)",
            param="temperature",
        )
    if generate and top_p not in (None, 1):
        raise InvalidRequest("only greedy decoding is served: top_p must be 1", param="top_p")
    if generate:
        _refuse_steering(extra)
    want = max(top_k, prompt_k or 0, 1 if generate else 0)
    return RunOptions(
        top_k=want,
        with_ranks=prompt_k is not None,
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


def _refuse_steering(extra: dict[str, Any]) -> None:
    """Refuses a steer of the generated token this server does not apply. (OpenAI's
    presence and frequency penalties count generated tokens only: none before the one.)"""
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
        yield sse_event({**head, "choices": [choice], **usage})
    if include_usage:
        last = {**head, "choices": [], "usage": response.usage.model_dump(mode="json")}
        yield sse_event(last)
    yield "data: [DONE]\n\n"


def sse_event(data: dict[str, Any]) -> str:
    """One server-sent event carrying ``data`` as JSON (models in it are encoded in
    pieces, as a long prompt's logprobs need)."""
    return f"data: {encode(data).decode()}\n\n"


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
    finish_reason: FinishReason = "length"
    generated: list[int] = []
    text = builder.text
    if _generates(body):
        assert scores.next_top_ids is not None and scores.next_top_logprobs is not None
        token = int(scores.next_top_ids[0])
        generated.append(token)
        # A generated special token (end of turn, end of text) adds no text, as in vLLM and
        # OpenAI, where special tokens are skipped in the output; its logprobs entry shows
        # its own text, as vLLM's does.
        special = token in model.special_ids
        piece = "" if special else next_piece(model.backend.tokenizer, seq.token_ids, token)
        builder.add(
            token,
            name(token) if special or body.return_tokens_as_token_ids else piece,
            float(scores.next_top_logprobs[0]),
            scores.next_top_ids,
            scores.next_top_logprobs,
            text=piece,
        )
        # Only the generated text is searched for stop strings, never the echoed prompt.
        kept, finish_reason = generation_end(body, model, token, piece)
        text += kept
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


class StopRequest(Protocol):
    """The fields of a request that say when generation stops (OpenAI's and vLLM's)."""

    stop: str | list[str] | None
    stop_token_ids: list[int] | None
    include_stop_str_in_output: bool
    ignore_eos: bool


def generation_end(
    body: StopRequest, model: ServedModel, token: int, piece: str
) -> tuple[str, FinishReason]:
    """The generated text kept of ``piece`` (the text ``token`` adds) and why generation
    ended, as vLLM decides: EOS (unless ``ignore_eos``) or a token of ``stop_token_ids``
    ends it with "stop" and keeps its text; else a stop string in the text ends it at its
    earliest occurrence (the order of the stops does not matter), the stop string itself
    kept only with ``include_stop_str_in_output``. A piece ending inside a character adds
    no text (``shown_text``), so no stop string is found in it."""
    piece = shown_text(piece)
    eos = token == model.backend.tokenizer.eos_token_id and not body.ignore_eos
    if eos or token in (body.stop_token_ids or ()):
        return piece, "stop"
    found = [(cut, stop) for stop in stop_strings(body.stop) if (cut := piece.find(stop)) >= 0]
    if not found:
        return piece, "length"
    cut, stop = min(found, key=lambda hit: (hit[0], -len(hit[1])))
    return piece[: cut + len(stop) if body.include_stop_str_in_output else cut], "stop"


def stop_strings(stop: str | list[str] | None) -> list[str]:
    """OpenAI's ``stop`` (a string, a list, or none) as a list."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)
