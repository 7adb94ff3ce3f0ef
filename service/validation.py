"""Request checks that need the settings or the model (shapes are checked by ``schemas``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.errors import InvalidRequest, TooLarge
from service.schemas import ChatScoreRequest
from service.settings import Settings

KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check_count(count: int, limit: int, param: str) -> None:
    """TooLarge when a request carries more than ``limit`` of something."""
    if count > limit:
        raise TooLarge(f"{count} {param} exceed the limit of {limit} per request", param=param)


def check_length(text: str | Sequence[int], limit: int, param: str) -> None:
    """TooLarge when one text is over ``limit`` characters (ids, for a token-id prompt)."""
    if len(text) > limit:
        raise TooLarge(f"{len(text)} characters exceed the limit of {limit} per text", param=param)


def check_lengths(texts: Sequence[str | Sequence[int]], limit: int, name: str) -> None:
    """``check_length`` for each of ``texts``, named ``name[i]``."""
    for i, text in enumerate(texts):
        check_length(text, limit, f"{name}[{i}]")


def validate_chat(req: ChatScoreRequest, tokenizer: Any, model: str, settings: Settings) -> None:
    """Sizes, roles and a scored message in every conversation; the model needs a template."""
    check_count(len(req.conversations), settings.max_texts_per_request, "conversations")
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest(f"model {model!r} has no chat template", param="model")
    for k, role in enumerate(req.score_roles):
        if role not in KNOWN_ROLES:
            raise InvalidRequest(f"unknown role {role!r}", param=f"score_roles[{k}]")
    for i, conv in enumerate(req.conversations):
        check_count(len(conv), settings.max_messages_per_conversation, f"conversations[{i}]")
        for j, message in enumerate(conv):
            check_length(
                message.content, settings.max_chars_per_text, f"conversations[{i}][{j}].content"
            )
            if message.role not in KNOWN_ROLES:
                raise InvalidRequest(
                    f"unknown role {message.role!r}; known: {', '.join(sorted(KNOWN_ROLES))}",
                    param=f"conversations[{i}][{j}].role",
                )
        if not any(m.role in req.score_roles for m in conv):
            raise InvalidRequest(
                f"no message has a role in score_roles {req.score_roles}",
                param=f"conversations[{i}]",
            )


def check_token_ids(
    prompts: Sequence[str | Sequence[int]],
    vocab_size: int,
    params: Sequence[str] | None = None,
) -> None:
    """Token-id prompts may only hold ids the tokenizer knows. ``params[i]`` names prompt i
    in the error (``prompt[i]`` by default); the offending id's index is appended."""
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            continue
        name = params[i] if params is not None else f"prompt[{i}]"
        for j, token in enumerate(prompt):
            if not 0 <= token < vocab_size:
                raise InvalidRequest(
                    f"token id {token} is outside the vocabulary (0..{vocab_size - 1})",
                    param=f"{name}[{j}]",
                )
