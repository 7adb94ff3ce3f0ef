"""Request checks that need the settings or the model (shapes are checked by ``schemas``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidRequest, TooLarge
from service.schemas import ChatScoreRequest
from service.settings import Settings

# OpenAI's roles, and names some templates use themselves: Gemma's "model" (its
# assistant), Llama 3.1's "ipython" (tool output).
KNOWN_ROLES = frozenset(
    {"system", "developer", "user", "assistant", "tool", "function", "model", "ipython"}
)


def check_count(count: int, limit: int, param: str, per: str = "request") -> None:
    """TooLarge when a request (or a part of it, ``per``) carries more than ``limit`` of
    something."""
    if count > limit:
        raise TooLarge(f"{param}: {count} items exceed the limit of {limit} per {per}", param=param)


def check_length(text: str | Sequence[int], limit: int, param: str) -> None:
    """TooLarge when one text is over ``limit`` characters (ids, for a token-id prompt)."""
    if len(text) > limit:
        raise TooLarge(f"{len(text)} characters exceed the limit of {limit} per text", param=param)


def check_texts(
    texts: Sequence[str | Sequence[int]],
    settings: Settings,
    name: str,
    params: Sequence[str] | None = None,
) -> None:
    """Texts per request, then characters per text (each named ``params[i]``, by default
    ``name[i]``)."""
    check_count(len(texts), settings.max_texts_per_request, name)
    for i, text in enumerate(texts):
        check_length(text, settings.max_chars_per_text, params[i] if params else f"{name}[{i}]")


@dataclass(frozen=True)
class TokenDetails:
    """What a request's answer holds per token: ``per_token`` entries (the token and its
    alternatives) for every token scored, asked for by the field named ``param``."""

    per_token: int
    param: str = "return_tokens"


def check_token_details(counts: Sequence[int], details: TokenDetails, limit: int) -> None:
    """TooLarge (naming ``details.param``) when the texts' ``counts`` of tokens, each with
    ``details.per_token`` entries, make more per-token entries than ``limit``."""
    entries = sum(counts) * details.per_token
    if entries > limit:
        raise TooLarge(
            f"{details.param} would return {entries} per-token entries ({sum(counts)} tokens "
            f"x {details.per_token}); at most {limit} per request (--max-token-details): send "
            "less text, or ask for fewer alternatives",
            param=details.param,
        )


def check_conversation(contents: Sequence[str], settings: Settings, name: str) -> None:
    """Messages per conversation, then characters per message content
    (``name[j].content``)."""
    check_count(len(contents), settings.max_messages_per_conversation, name, "conversation")
    for j, content in enumerate(contents):
        check_length(content, settings.max_chars_per_text, f"{name}[{j}].content")


def validate_chat(req: ChatScoreRequest, tokenizer: Any, model: str, settings: Settings) -> None:
    """Sizes and roles of every conversation; the model needs a template."""
    check_count(len(req.conversations), settings.max_texts_per_request, "conversations")
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest(f"model {model!r} has no chat template", param="model")
    for k, role in enumerate(req.score_roles):
        if role not in KNOWN_ROLES:
            raise InvalidRequest(f"unknown role {role!r}", param=f"score_roles[{k}]")
    for i, conv in enumerate(req.conversations):
        check_conversation([m.content for m in conv], settings, f"conversations[{i}]")
        for j, message in enumerate(conv):
            if message.role not in KNOWN_ROLES:
                raise InvalidRequest(
                    f"unknown role {message.role!r}; known: {', '.join(sorted(KNOWN_ROLES))}",
                    param=f"conversations[{i}][{j}].role",
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
