"""The completions door's per-token answers: the legacy ``logprobs`` lists (OpenAI) and
``prompt_logprobs`` (vLLM), built from one prompt's scores. Logprobs are natural logs
(nats); a -inf (a token the model rules out) is reported as -9999, as OpenAI and vLLM do,
since JSON has no infinity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.api.openai_schemas import LegacyLogprobs, PromptLogprob
from service.scoring.aggregates import LOWEST_LOGPROB
from service.sequences import ScoredSequence, SequenceScores
from service.token_text import completed_piece


def finite(logprob: float) -> float:
    """``logprob`` with -inf (and anything below) raised to -9999."""
    return max(float(logprob), LOWEST_LOGPROB)


def token_id_name(token_id: int) -> str:
    """vLLM's name of a token with ``return_tokens_as_token_ids``."""
    return f"token_id:{token_id}"


class LegacyLogprobsBuilder:
    """Accumulates the legacy logprobs lists and the choice text, token by token.

    ``name`` gives the key of an alternative in ``top_logprobs`` (its text, or its id)."""

    def __init__(self, name: Callable[[int], str], k: int) -> None:
        self.name = name
        self.k = k
        self.text = ""
        self.lists = LegacyLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])

    def add(
        self,
        token_id: int,
        shown: str,
        logprob: float | None,
        top_ids: Any,
        top_lps: Any,
        text: str | None = None,
    ) -> None:
        """One token: ``shown`` in ``tokens``, and ``text`` (default ``shown``) added to the
        choice's text; a special token the tokenizer added shows its name but adds none."""
        self.lists.tokens.append(shown)
        self.lists.text_offset.append(len(self.text))
        self.text += shown if text is None else text
        self.lists.token_logprobs.append(None if logprob is None else finite(logprob))
        self.lists.top_logprobs.append(
            None if logprob is None else self._top(token_id, shown, logprob, top_ids, top_lps)
        )

    def _top(
        self, token_id: int, shown: str, logprob: float, top_ids: Any, top_lps: Any
    ) -> dict[str, float]:
        top: dict[str, float] = {}
        for token, lp in zip(top_ids[: self.k], top_lps[: self.k], strict=True):
            # The chosen token is keyed as in ``tokens``, never by its lone decoding: a
            # token holding part of a character decodes alone to U+FFFD.
            if int(token) != token_id:
                key = self.name(int(token))
                top[key] = max(top.get(key, LOWEST_LOGPROB), finite(lp))
        # The chosen token's own entry, with the very float of token_logprobs (a different
        # token decoding to the same text keeps the larger value).
        top[shown] = max(top.get(shown, LOWEST_LOGPROB), finite(logprob))
        return top


def prompt_logprobs(
    seq: ScoredSequence,
    scores: SequenceScores,
    k: int,
    token_text: Callable[[int], str],
    tokenizer: Any,
) -> list[dict[str, PromptLogprob] | None]:
    """vLLM's ``prompt_logprobs``: None for the first token (no context), then per position
    a dict keyed by token id: the prompt token first (its rank: 1 + the tokens more
    likely), then the ``k`` most likely tokens (ranks 1..k), one entry per token.

    ``decoded_token`` is a token's text (``token_text``); where that ends inside a
    character (in U+FFFD), it is the text the token adds after the prompt so far, or ""
    while the character is incomplete, as vLLM corrects it."""
    out: list[dict[str, PromptLogprob] | None] = [None]
    ids = seq.input_ids

    def decoded(p: int, token: int) -> str:
        text = token_text(token)
        if not text.endswith("\ufffd"):
            return text
        return completed_piece(tokenizer, ids[:p], token)

    for p in range(1, len(ids)):
        entry = {
            str(ids[p]): PromptLogprob(
                logprob=finite(scores.logprobs[p]),
                rank=int(scores.ranks[p]),
                decoded_token=decoded(p, ids[p]),
            )
        }
        for rank, (token, lp) in enumerate(
            zip(scores.top_ids[p][:k], scores.top_logprobs[p][:k], strict=True), start=1
        ):
            entry[str(int(token))] = PromptLogprob(
                logprob=finite(lp), rank=rank, decoded_token=decoded(p, int(token))
            )
        out.append(entry)
    return out
