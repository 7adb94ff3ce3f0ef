"""Chat messages as one prompt (the OpenAI-compatible chat door): the conversation rendered
by the model's own template, every token of it then scored given the ones before it.

Unlike ``/v1/score/chat`` nothing is masked: the whole rendering is the prompt, as vLLM's
``prompt_logprobs`` sees it. Templates come only from model files; a request may only feed
the template variables (``template_kwargs``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import InvalidRequest
from service.sequences import ScoredSequence, prompt_sequences


@dataclass(frozen=True)
class ChatPromptOptions:
    """How the conversation is rendered and tokenized."""

    add_generation_prompt: bool = True  # end with the template's cue for the assistant
    continue_final_message: bool = False  # leave the last message open, no end of turn
    add_special_tokens: bool = False  # the template writes its own BOS where it wants one
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The request's fields that its door does not declare (OpenAI clients send many): one
    # that is an argument of the rendering (vLLM takes a request's chat_template) is
    # refused, since it would not be applied.
    request_fields: frozenset[str] = frozenset()


def chat_prompt_sequence(
    tokenizer: Any, messages: list[dict[str, str]], options: ChatPromptOptions
) -> ScoredSequence:
    """The rendered conversation as one sequence (InvalidRequest, param ``messages``, when
    the model has no template or its template refuses the messages)."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest("the model has no chat template", param="messages")
    _refuse_rendering_arguments(tokenizer, options)
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=options.add_generation_prompt,
            continue_final_message=options.continue_final_message,
            **options.template_kwargs,
        )
    except Exception as exc:  # a template's raise_exception(), or a Jinja error
        raise InvalidRequest(
            f"the chat template rejected the messages: {exc}", param="messages"
        ) from exc
    text = str(text)
    if not text:
        raise InvalidRequest("the chat template rendered nothing", param="messages")
    try:  # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest("not valid Unicode text (lone surrogate)", param="messages") from exc
    (seq,) = prompt_sequences(tokenizer, [text], options.add_special_tokens)
    return seq


def _refuse_rendering_arguments(tokenizer: Any, options: ChatPromptOptions) -> None:
    """Refuses what would steer the rendering call itself (``chat_template``, ``tokenize``,
    ``documents``...): as a template variable, or as a field of the request."""
    parameters = inspect.signature(tokenizer.apply_chat_template).parameters
    steering = {"chat_template", *parameters} - {"self", "kwargs"}
    for name in options.template_kwargs:
        if name in steering:
            raise InvalidRequest(
                f"{name!r} is an argument of the rendering, not a template variable",
                param="chat_template_kwargs",
            )
    if clashes := sorted(options.request_fields & steering):
        raise InvalidRequest(
            f"{clashes[0]!r} is not applied here: conversations are rendered by the model's "
            "own chat template, as its files define it",
            param=clashes[0],
        )
