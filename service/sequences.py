"""From texts and conversations to token sequences, forward windows, and back.

A ``ScoredSequence`` is one text (or rendered conversation) as token ids with tiled
character offsets and a mask of the tokens that count in its aggregates. ``windows_for``
fits it into the model's context; ``stitch`` puts the windows' scores back in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from service.backends.base import ForwardItem, ForwardResult
from service.errors import InternalError, InvalidRequest
from service.scoring.aggregates import LOWEST_LOGPROB
from service.scoring.offsets import offsets_from_bytes, shares_a_character, tile_offsets
from service.scoring.windows import Window, plan_windows
from service.token_bytes import token_byte_lengths
from service.token_text import token_pieces


@dataclass
class ScoredSequence:
    """One text's tokens. Positions count from the prepended BOS when there is one.

    ``offsets`` are tiled character offsets of ``token_ids`` into ``text``; ``scored[j]``
    says whether token j counts in the aggregates; ``message_index[j]`` (chats only) is
    the message token j belongs to, or None for template text.
    """

    text: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    scored: list[bool]
    bos_id: int | None = None
    message_index: list[int | None] | None = None
    truncated: bool = False
    # UTF-8 bytes each token holds where a token holds part of a character (byte-level
    # and byte-fallback tokenizers); None: each token holds the bytes of its offsets' text.
    token_bytes: list[int] | None = None

    def keep_first(self, count: int) -> None:
        """Truncate to the first ``count`` tokens (every per-token list alike)."""
        self.token_ids = self.token_ids[:count]
        self.offsets = self.offsets[:count]
        self.scored = self.scored[:count]
        if self.token_bytes is not None:
            self.token_bytes = self.token_bytes[:count]
        if self.message_index is not None:
            self.message_index = self.message_index[:count]
        self.truncated = True

    @property
    def input_ids(self) -> list[int]:
        """Token ids as fed to the model (BOS first when prepended)."""
        return [self.bos_id, *self.token_ids] if self.bos_id is not None else self.token_ids

    @property
    def shift(self) -> int:
        """Position of text token 0 in ``input_ids``."""
        return 1 if self.bos_id is not None else 0


@dataclass(frozen=True)
class SequenceScores:
    """Scores of every position of ``input_ids`` (position 0 is NaN / rank 0: no context)."""

    logprobs: npt.NDArray[np.float32]
    ranks: npt.NDArray[np.int64]
    top_ids: npt.NDArray[np.int64]
    top_logprobs: npt.NDArray[np.float32]
    # The top_k tokens after the last position, when asked for (best first).
    next_top_ids: npt.NDArray[np.int64] | None = None
    next_top_logprobs: npt.NDArray[np.float32] | None = None
    # With ``with_stats``: per position, the entropy of the model's distribution there and
    # the standard deviation of log p under it (nats; NaN at position 0).
    entropy: npt.NDArray[np.float32] | None = None
    logprob_std: npt.NDArray[np.float32] | None = None
    # With ``with_bow``: log B (beginning-of-word mass) per position, one longer than the
    # positions (the last entry is after the last token; NaN where not computed).
    bow: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to fit and score sequences: overflow handling, detail, and the next token."""

    overflow: str = "error"
    stride: int | None = None
    top_k: int = 0
    with_ranks: bool = False
    next_token: bool = False
    with_stats: bool = False
    with_bow: bool = False
    with_full: bool = False
    offer_overflow: bool = True  # False where the door has no overflow option (error hints)


@dataclass(frozen=True)
class Encoded:
    """One text as token ids with tiled character offsets, and the UTF-8 bytes each token
    holds where a token holds part of a character (None: its offsets' text)."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    token_bytes: list[int] | None = None


def encode(tokenizer: Any, texts: list[str]) -> list[Encoded]:
    """Each text's token ids (no special tokens added) and tiled character offsets."""
    batch = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [
        encoded_from_offsets(tokenizer, text, list(ids), [tuple(o) for o in offsets])
        for text, ids, offsets in zip(
            texts, batch["input_ids"], batch["offset_mapping"], strict=True
        )
    ]


def encoded_from_offsets(
    tokenizer: Any, text: str, ids: list[int], offsets: list[tuple[int, int]]
) -> Encoded:
    """Offsets tiled, and each token's bytes counted exactly where a character is split
    across tokens and the tokenizer is byte-level or SentencePiece with byte fallback."""
    if shares_a_character(offsets):
        lengths = token_byte_lengths(tokenizer, ids, text)
        if lengths is not None:
            return Encoded(ids, offsets_from_bytes(text, lengths), lengths)
    return Encoded(ids, tile_offsets(offsets, len(text)))


def text_sequence(text: str, encoded: Encoded, bos_id: int | None) -> ScoredSequence:
    """A plain text: every token with context is scored (all of them after a BOS)."""
    scored = [bos_id is not None or j > 0 for j in range(len(encoded.ids))]
    return ScoredSequence(
        text, encoded.ids, encoded.offsets, scored, bos_id, token_bytes=encoded.token_bytes
    )


def fit_to_context(
    seq: ScoredSequence,
    context: int,
    overflow: str,
    stride: int | None,
    param: str,
    *,
    offer_overflow: bool = True,
) -> list[Window]:
    """Windows for ``seq`` under ``context`` tokens; truncates ``seq`` in place for 'truncate'.

    Raises InvalidRequest (naming ``param``) for an over-long sequence with 'error'; its
    message suggests the other overflow modes only where the caller's door has them
    (``offer_overflow``).
    """
    n = len(seq.input_ids)
    if overflow == "sliding_window":
        stride = _stride(stride, context)  # refuse a bad stride even when this text fits
    if n > context:
        if overflow == "error":
            raise context_exceeded(n, context, param, offer_overflow=offer_overflow)
        if overflow == "truncate":
            seq.keep_first(context - seq.shift)
            n = context
        else:
            return plan_windows(n, context, _stride(stride, context))
    return [Window(0, n, 1)] if n > 0 else []


def _stride(stride: int | None, context: int) -> int:
    if stride is None:
        return max(1, context // 2)
    if stride >= context:
        raise InvalidRequest(
            f"stride {stride} must be below the model's context of {context}", param="stride"
        )
    return stride


def active_windows(windows: list[Window], options: RunOptions) -> list[Window]:
    """The windows that need a forward pass: those that score something, and the last one
    when the next token is asked for (a one-token prompt scores nothing but has a next)."""
    active = [w for w in windows if w.end > w.score_from]
    if options.next_token and windows and (not active or active[-1] is not windows[-1]):
        active.append(windows[-1])
    return active


def forward_items(
    seq: ScoredSequence, windows: list[Window], options: RunOptions
) -> list[ForwardItem]:
    """One forward item per active window (the last one may also ask for the next token)."""
    ids = seq.input_ids
    active = active_windows(windows, options)
    return [
        ForwardItem(
            tuple(ids[w.begin : w.end]),
            min(w.score_from, w.end) - w.begin,
            options.top_k,
            options.with_ranks,
            options.next_token and i == len(active) - 1,
            options.with_stats,
            options.with_bow,
            with_full=options.with_full,
        )
        for i, w in enumerate(active)
    ]


def stitch(
    seq: ScoredSequence, windows: list[Window], results: list[ForwardResult], options: RunOptions
) -> SequenceScores:
    """Per-position scores of ``seq`` from its active windows' (``checked``) results."""
    top_k = options.top_k
    n = len(seq.input_ids)
    logprobs = np.full(n, np.nan, dtype=np.float32)
    ranks = np.zeros(n, dtype=np.int64)
    top_ids = np.zeros((n, top_k), dtype=np.int64)
    top_lps = np.zeros((n, top_k), dtype=np.float32)
    entropy = np.full(n, np.nan, dtype=np.float32) if options.with_stats else None
    std = np.full(n, np.nan, dtype=np.float32) if options.with_stats else None
    bow = np.full(n + 1, np.nan, dtype=np.float32) if options.with_bow else None
    for window, result in zip(active_windows(windows, options), results, strict=True):
        span = slice(window.score_from, window.end)
        logprobs[span] = result.logprobs
        ranks[span] = result.ranks
        if top_k:
            top_ids[span] = result.top_ids
            top_lps[span] = result.top_logprobs
        if entropy is not None and std is not None:
            entropy[span] = result.entropy
            std[span] = result.logprob_std
        if bow is not None and result.bow is not None:
            bow[span] = result.bow
            if result.next_bow is not None:
                bow[window.end] = result.next_bow
    last = results[-1] if results else None
    return SequenceScores(
        logprobs,
        ranks,
        top_ids,
        top_lps,
        last.next_top_ids if last is not None else None,
        last.next_top_logprobs if last is not None else None,
        entropy,
        std,
        bow,
    )


def checked(result: ForwardResult, param: str | None) -> ForwardResult:
    """``result`` as a scheduler returned it, with every -inf logprob (a token the model
    rules out) raised to ``LOWEST_LOGPROB``, as JSON has no infinity; a NaN (a numerical
    overflow inside the model) fails the request holding it, naming ``param``, rather
    than pass for a score. Each result is checked once, where it comes back; the full
    distributions (``full_logprobs``) are left to ``compare_positions``, which floors them."""
    reported = [result.logprobs, result.top_logprobs, result.next_top_logprobs]
    if any(lps is not None and np.isnan(lps).any() for lps in reported):
        raise InternalError(
            "the model's scores are not numbers (NaN): a numerical overflow inside the "
            "model, most often in float16; --dtype float32 avoids it",
            param=param,
        )
    return dataclasses.replace(
        result,
        logprobs=_floored(result.logprobs),
        top_logprobs=_floored(result.top_logprobs),
        next_top_logprobs=_floored(result.next_top_logprobs),
    )


@overload
def _floored(logprobs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
@overload
def _floored(logprobs: None) -> None: ...
def _floored(logprobs: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32] | None:
    return None if logprobs is None else np.maximum(logprobs, LOWEST_LOGPROB)


def context_exceeded(
    n: int, context: int, param: str, *, offer_overflow: bool = True
) -> InvalidRequest:
    """The 422 for ``n`` tokens over the model's ``context`` (suggesting the overflow
    modes where the caller's door has them)."""
    hint = "; use overflow='truncate' or 'sliding_window'" if offer_overflow else ""
    return InvalidRequest(f"{n} tokens exceed the model's context of {context}{hint}", param=param)


def ids_sequence(tokenizer: Any, ids: list[int]) -> ScoredSequence:
    """A prompt given as token ids: its text is the ids decoded, cut into one piece per
    token so the pieces concatenate back to that text."""
    text = str(tokenizer.decode(ids, clean_up_tokenization_spaces=False))
    (encoded,) = encode(tokenizer, [text])
    if encoded.ids != ids:  # the text does not re-tokenize to these ids: cut it by decoding
        pieces = token_pieces(tokenizer, ids)
        text = "".join(pieces)
        offsets = []
        cursor = 0
        for piece in pieces:
            offsets.append((cursor, cursor + len(piece)))
            cursor += len(piece)
        encoded = Encoded(list(ids), offsets)
    return text_sequence(text, encoded, None)


def prompt_sequences(
    tokenizer: Any, prompts: Sequence[str | Sequence[int]], add_special_tokens: bool = False
) -> list[ScoredSequence]:
    """Raw prompts as sequences: texts are tokenized (with the special tokens the tokenizer
    adds, such as a BOS, when ``add_special_tokens``), token ids are taken as they are."""
    texts = [p for p in prompts if isinstance(p, str)]
    encoded = iter(encode(tokenizer, texts)) if texts else iter(())
    added: Any = iter(())
    if texts and add_special_tokens:
        added = iter(tokenizer(texts, add_special_tokens=True)["input_ids"])
    seqs = []
    for prompt in prompts:
        if isinstance(prompt, str):
            plain = next(encoded)
            if add_special_tokens:
                seqs.append(with_added_tokens(tokenizer, prompt, plain, list(next(added))))
            else:
                seqs.append(text_sequence(prompt, plain, None))
        else:
            seqs.append(ids_sequence(tokenizer, list(prompt)))
    return seqs


def with_added_tokens(
    tokenizer: Any, text: str, plain: Encoded, full_ids: list[int]
) -> ScoredSequence:
    """``text`` with the tokens its tokenizer adds around it (``full_ids``: a BOS before,
    an EOS after where the tokenizer adds one). They hold no character of the text: a
    prefix token sits at offset 0, a suffix token at the end. The first token, added or
    not, is unscored."""
    n = len(plain.ids)
    start = next((k for k in range(len(full_ids) - n + 1) if full_ids[k : k + n] == plain.ids), -1)
    if start < 0:  # the added tokens changed how the text itself is cut: keep that cut
        return ids_sequence(tokenizer, full_ids)
    after = len(full_ids) - start - n
    offsets = [(0, 0)] * start + plain.offsets + [(len(text), len(text))] * after
    token_bytes = plain.token_bytes
    if token_bytes is not None:
        token_bytes = [0] * start + token_bytes + [0] * after
    return text_sequence(text, Encoded(full_ids, offsets, token_bytes), None)
