"""The OpenAI-compatible chat door: ``POST /v1/chat/completions`` for the ``openai`` client's
``chat.completions``, with vLLM's ``prompt_logprobs`` to score a whole conversation.

The messages are rendered by the model's own chat template (``add_generation_prompt``, or
``continue_final_message`` to leave the last message open) and scored as one prompt by the
same engine as every other door. At most one token is generated, greedily. For scores of
chosen messages only (assistant turns, per-message aggregates) use ``/v1/score/chat``.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response

from service.api.deps import EngineDep
from service.api.errors_http import SCORING_ERRORS, error_responses
from service.api.openai_chat_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    TokenLogprob,
    TopLogprob,
)
from service.api.openai_compat import (
    STREAM_DOCUMENTED,
    generation_end,
    greedy_options,
    prompt_details,
    respond,
    sse_event,
)
from service.api.openai_logprobs import finite, prompt_logprobs, token_id_name
from service.api.openai_schemas import CompletionUsage, StreamOptions
from service.errors import InvalidRequest
from service.sequences import ScoredSequence, SequenceScores
from service.served import PromptAnswer, PromptOutcome, ServedModel
from service.token_text import next_piece
from service.validation import KNOWN_ROLES


def install(app: FastAPI, guarded: Sequence[Depends]) -> None:
    """Register ``POST /v1/chat/completions`` on ``app``, behind ``guarded``."""
    app.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        dependencies=list(guarded),
        response_model=ChatCompletionResponse,
        responses={**error_responses(SCORING_ERRORS), 200: STREAM_DOCUMENTED},
    )


async def chat_completions(
    body: ChatCompletionRequest, request: Request, engine: EngineDep
) -> Response:
    """Chat completions: the conversation's logprobs (prompt_logprobs) and at most one
    greedy token with its logprobs."""
    messages = chat_messages(body.messages, body.tools)
    options = greedy_options(
        body.generates,
        body.temperature,
        body.top_p,
        body.model_extra or {},
        top_k=(body.top_logprobs or 0) if body.logprobs else 0,
        prompt_k=body.prompt_logprobs,
    )
    template = body.rendering(body.add_special_tokens)
    # vLLM's chat answer holds prompt_logprobs twice: at the top level and in the choice.
    details = prompt_details(body.prompt_logprobs, copies=2)
    answer = PromptAnswer(functools.partial(chat_response, body), details)
    work = engine.score_chat_prompt(body.model, messages, options, template, answer=answer)
    stream = (body.stream_options or StreamOptions()) if body.stream else None
    return await respond(request, work, chat_events, stream)


def chat_messages(
    messages: Sequence[ChatCompletionMessage], tools: list[Any] | None
) -> list[dict[str, str]]:
    """The messages as the template takes them; refuses what is not rendered here (tools,
    roles no template knows). Shared with ``/tokenize``, so both count the same tokens."""
    if tools:
        raise InvalidRequest("tools are not rendered here: leave them out", param="tools")
    for j, message in enumerate(messages):
        if message.role not in KNOWN_ROLES:
            raise InvalidRequest(
                f"unknown role {message.role!r}; known: {', '.join(sorted(KNOWN_ROLES))}",
                param=f"messages[{j}].role",
            )
    return [{"role": m.role, "content": m.text()} for m in messages]


@dataclass(frozen=True)
class _Generated:
    """The one generated token: its id, the text it adds, why generation ended, and its
    logprobs entry (None unless asked for)."""

    token: int
    content: str
    finish_reason: Literal["length", "stop"]
    logprob: TokenLogprob | None


def chat_response(body: ChatCompletionRequest, outcome: PromptOutcome) -> ChatCompletionResponse:
    """The one choice: the generated token's text (after the echoed last message with
    ``echo``), its logprobs when asked, and vLLM's prompt fields when asked."""
    (seq,), (scores,) = outcome.sequences, outcome.scores
    model = outcome.model
    echoed = body.messages[-1].text() if body.echo and body.messages[-1].role == "assistant" else ""
    generated = _generated(body, model, seq, scores) if body.generates else None
    logprobs = None
    if body.logprobs:
        content = [generated.logprob] if generated and generated.logprob else []
        logprobs = ChoiceLogprobs(content=content)
    prompt_k = body.prompt_logprobs
    token_ids = [generated.token] if generated else []
    prompt = {
        "prompt_logprobs": None
        if prompt_k is None
        else prompt_logprobs(seq, scores, prompt_k, model.token_text, model.backend.tokenizer),
        "prompt_token_ids": seq.input_ids if body.return_token_ids else None,
    }
    choice = ChatChoice(
        index=0,
        message=AssistantMessage(content=echoed + (generated.content if generated else "")),
        logprobs=logprobs,
        finish_reason=generated.finish_reason if generated else "length",
        token_ids=token_ids if body.return_token_ids else None,
        **prompt,
    )
    prompt_tokens = len(seq.token_ids)
    return ChatCompletionResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model.name,
        choices=[choice],
        usage=CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(token_ids),
            total_tokens=prompt_tokens + len(token_ids),
        ),
        **prompt,
    )


def _generated(
    body: ChatCompletionRequest, model: ServedModel, seq: ScoredSequence, scores: SequenceScores
) -> _Generated:
    """The greedy token after the prompt. A special token (end of turn) adds no text, as
    in vLLM and OpenAI; when it ends with "stop" is ``generation_end``'s to say."""
    ids, values = scores.next_top_ids, scores.next_top_logprobs
    assert ids is not None and values is not None
    token = int(ids[0])
    tokenizer = model.backend.tokenizer
    piece = "" if token in model.special_ids else next_piece(tokenizer, seq.token_ids, token)
    content, finish_reason = generation_end(body, model, token, piece)
    logprob = None
    if body.logprobs:
        k = body.top_logprobs or 0
        name = token_id_name if body.return_tokens_as_token_ids else model.token_text
        top = [
            logprob_entry(name, int(i), float(v)) for i, v in zip(ids[:k], values[:k], strict=True)
        ]
        chosen = logprob_entry(name, token, float(values[0]))
        logprob = TokenLogprob(**chosen.model_dump(), top_logprobs=top)
    return _Generated(token, content, finish_reason, logprob)


def logprob_entry(name: Callable[[int], str], token: int, logprob: float) -> TopLogprob:
    """A token's entry: its name (its text on its own, or ``token_id:<id>``) and the name's
    UTF-8 bytes, as vLLM gives them (a token ending inside a character shows U+FFFD); a
    -inf logprob as -9999, since JSON has no infinity."""
    text = name(token)
    return TopLogprob(token=text, logprob=finite(logprob), bytes=list(text.encode("utf-8")))


def chat_events(response: ChatCompletionResponse, *, include_usage: bool) -> Iterator[str]:
    """``response`` as OpenAI's chat server-sent events: one ``chat.completion.chunk`` with
    the whole message as its delta (a scoring server has it at once), a usage chunk when
    asked, then ``[DONE]``."""
    prompt_fields = {"prompt_logprobs", "prompt_token_ids"}
    head = response.model_dump(mode="json", exclude={"choices", "usage", "object", *prompt_fields})
    head["object"] = "chat.completion.chunk"
    usage = {"usage": None} if include_usage else {}
    # The first chunk's; left as models, so a long prompt's are encoded in pieces.
    prompt = {k: getattr(response, k) for k in prompt_fields if getattr(response, k) is not None}
    for choice in response.choices:
        delta: dict[str, Any] = choice.model_dump(
            mode="json", exclude={"message", "prompt_logprobs"}
        )
        if choice.prompt_logprobs is not None:  # as models: encode cuts a long list
            delta["prompt_logprobs"] = choice.prompt_logprobs
        delta["delta"] = choice.message.model_dump(mode="json")
        yield sse_event({**head, **prompt, "choices": [delta], **usage})
        prompt = {}
    if include_usage:
        last = {**head, "choices": [], "usage": response.usage.model_dump(mode="json")}
        yield sse_event(last)
    yield "data: [DONE]\n\n"
