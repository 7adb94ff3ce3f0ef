"""A resident model as the engine serves it, and what a scored request hands back."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from service.backends.base import ModelBackend
from service.batching.pending import ScoredItem
from service.batching.scheduler import Scheduler
from service.errors import InvalidRequest, TooLarge, Unavailable
from service.schemas import CompareResponse, ContinuationResponse, ModelCard, ScoreResponse
from service.scoring.aggregates import safe_exp
from service.sequences import (
    RunOptions,
    ScoredSequence,
    SequenceScores,
    checked,
    fit_to_context,
    forward_items,
    stitch,
)
from service.tasks import cancelled_under_us
from service.token_text import lone_token_text
from service.validation import TokenDetails

T = TypeVar("T")


TIMING_HEADERS = ("x-queue-time-ms", "x-inference-time-ms")


@dataclass(frozen=True)
class RequestTiming:
    """Where a request's time went, in seconds: the longest queue wait of its items, and
    the forward passes it took part in (each counted once)."""

    queue_s: float
    inference_s: float

    @classmethod
    def of(cls, items: Sequence[ScoredItem]) -> RequestTiming:
        batches = {item.timing.batch: item.timing.inference_s for item in items}
        queue_s = max((item.timing.queue_s for item in items), default=0.0)
        return cls(queue_s, sum(batches.values()))

    def headers(self) -> dict[str, str]:
        """``x-queue-time-ms`` and ``x-inference-time-ms`` (milliseconds), the names every
        door reports them under: HTTP headers, gRPC initial metadata."""
        queue, inference = TIMING_HEADERS
        return {queue: f"{self.queue_s * 1000:.1f}", inference: f"{self.inference_s * 1000:.1f}"}


@dataclass(frozen=True)
class ScoreOutcome:
    """A response and the timing behind it (the doors report it in headers)."""

    response: ScoreResponse
    timing: RequestTiming


@dataclass
class ServedModel:
    """A resident model with its scheduler and its preparation (tokenizer) thread."""

    name: str
    revision: str
    scheduler: Scheduler
    prep: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tokenize")
    )
    created: int = field(default_factory=lambda: int(time.time()))  # Unix seconds

    def __post_init__(self) -> None:
        # One entry per token id at most: a cache the size of the vocabulary (65,536 entries
        # thrashed on 128k-256k vocabularies).
        self.token_text: Callable[[int], str] = functools.cache(self._decode_one)

    @property
    def backend(self) -> ModelBackend:
        return self.scheduler.backend

    @functools.cached_property
    def tokenizer_fingerprint(self) -> str:
        """sha256 of the tokenizer's full definition: equal means identical token ids."""
        tokenizer = self.backend.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            definition = backend.to_str()
        else:
            definition = json.dumps(sorted(tokenizer.get_vocab().items()))
        return hashlib.sha256(definition.encode()).hexdigest()

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's special tokens (BOS, EOS, end of turn, pad...)."""
        return frozenset(int(i) for i in self.backend.tokenizer.all_special_ids)

    def _decode_one(self, token_id: int) -> str:
        return lone_token_text(self.backend.tokenizer, token_id)

    @property
    def context(self) -> int:
        return self.backend.info.max_context

    @functools.cached_property
    def tokenizer_ids(self) -> int:
        """One past the tokenizer's highest token id (``len`` undercounts ids with gaps)."""
        tokenizer = self.backend.tokenizer
        return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)

    @functools.cached_property
    def default_bos(self) -> int | None:
        """The BOS token the tokenizer puts before a text by default (Llama's and Gemma's
        do, SmolLM2's does not); None when it adds none."""
        tokenizer = self.backend.tokenizer
        bos = tokenizer.bos_token_id
        added = list(tokenizer("a")["input_ids"])
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        return int(bos) if bos is not None and added[:1] == [bos] != plain[:1] else None

    def read_vocabulary(self) -> None:
        """Read what requests check their token ids against now (a 256k vocabulary takes a
        while), so the first request does not do it on the event loop."""
        _ = self.tokenizer_ids, self.special_ids, self.default_bos

    @property
    def vocab_limit(self) -> int:
        """Token ids a client may send: below this, both the tokenizer and the model know."""
        rows = self.backend.info.vocab_size
        return self.tokenizer_ids if rows is None else min(self.tokenizer_ids, rows)

    def start_token(self, param: str, why: str) -> int:
        """The token a sequence starts with when it has none of its own (BOS, else EOS);
        a model with neither refuses the request (422 naming ``param``)."""
        token = self.backend.bos_id()
        if token is None:
            raise InvalidRequest(
                f"model {self.name!r} has neither a BOS nor an EOS token, which {why} needs",
                param=param,
            )
        return token

    def check_vocabulary(self, token_lists: Sequence[Sequence[int]], params: Sequence[str]) -> None:
        """Refuse (422 naming ``params[i]``) a sequence holding a token the model has no
        embedding for (a tokenizer's added tokens): in a batch it would fail every request."""
        rows = self.backend.info.vocab_size
        if rows is None or rows >= self.tokenizer_ids:
            return  # the usual case: every token id has its row
        for ids, param in zip(token_lists, params, strict=True):
            if max(ids, default=0) < rows:
                continue
            outside = next(t for t in ids if t >= rows)
            raise InvalidRequest(
                f"token {self.token_text(outside)!r} (id {outside}) is outside the model's "
                f"vocabulary (ids 0..{rows - 1}): the tokenizer has tokens the model has no "
                "embedding for",
                param=param,
            )

    async def prepare(self, fn: Callable[..., T], *args: Any) -> T:
        """Run tokenizer work off the event loop, one call at a time per model. Work the
        shutdown cancelled (the grace period ran out) is Unavailable, as queued windows
        are, not a caller who left."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self.prep, fn, *args)
        except RuntimeError as exc:  # the executor is shut down
            raise Unavailable("the model is shutting down") from exc
        try:
            return await future
        except asyncio.CancelledError:
            if cancelled_under_us(future):
                raise Unavailable("the model is shutting down") from None
            raise

    async def score_sequences(
        self,
        seqs: list[ScoredSequence],
        params: list[str],
        options: RunOptions,
        deadline: float,
    ) -> tuple[list[SequenceScores], RequestTiming]:
        """Fit every sequence into the context (refusing one that cannot, naming its
        ``params`` entry), run the windows through the scheduler before ``deadline``, and
        stitch each sequence's scores back together."""
        self.check_vocabulary([seq.token_ids for seq in seqs], params)
        plans = [
            fit_to_context(
                seq,
                self.context,
                options.overflow,
                options.stride,
                param,
                offer_overflow=options.offer_overflow,
            )
            for seq, param in zip(seqs, params, strict=True)
        ]
        self._check_capacity(sum(len(windows) for windows in plans), params, options)
        items = [
            forward_items(seq, windows, options) for seq, windows in zip(seqs, plans, strict=True)
        ]
        scored = await self.scheduler.submit([i for group in items for i in group], deadline)
        outputs = [s.result for s in scored]
        stitched: list[SequenceScores] = []
        offset = 0
        for seq, windows, group, param in zip(seqs, plans, items, params, strict=True):
            results = [checked(r, param) for r in outputs[offset : offset + len(group)]]
            stitched.append(stitch(seq, windows, results, options))
            offset += len(group)
        return stitched, RequestTiming.of(scored)

    def _check_capacity(self, windows: int, params: list[str], options: RunOptions) -> None:
        """TooLarge for a request needing more windows than the model's whole queue holds
        (sliding windows with a tiny stride): admitted into an empty queue, it kept every
        other client at 429 for as long as it ran. Checked before the windows' tokens are
        copied out."""
        capacity = self.scheduler.capacity
        if windows <= capacity:
            return
        sliding = options.overflow == "sliding_window"
        raise TooLarge(
            f"the request needs {windows} forward windows and model {self.name!r} queues at "
            f"most {capacity} (--max-queue): send fewer texts"
            + (", or use a larger stride" if sliding else ""),
            param="stride" if sliding else params[0].split("[")[0],
        )

    def card(self) -> ModelCard:
        info = self.backend.info
        return ModelCard(
            id=self.name,
            backend=info.backend,
            dtype=info.dtype,
            device=info.device,
            max_context=info.max_context,
            revision=self.revision,
            has_chat_template=bool(getattr(self.backend.tokenizer, "chat_template", None)),
            compiled=info.compiled,
            created=self.created,
        )


@dataclass(frozen=True)
class CompareOutcome:
    """Two models' scores side by side and the timing behind them."""

    response: CompareResponse
    timing: RequestTiming


@dataclass(frozen=True)
class ContinuationOutcome:
    """Scored continuations and the timing behind them."""

    response: ContinuationResponse
    timing: RequestTiming


@dataclass(frozen=True)
class PromptOutcome:
    """Raw prompts scored: each prompt's sequence and per-position scores, and the door's
    ``answer`` built from them within the request (see ``PromptAnswer``)."""

    model: ServedModel
    sequences: list[ScoredSequence]
    scores: list[SequenceScores]
    timing: RequestTiming
    answer: BaseModel | None = None


@dataclass(frozen=True)
class PromptAnswer:
    """How a door turns scored prompts into its answer, as part of the request (under its
    deadline, counted in flight, cancelled with it): ``build`` runs on the model's
    preparation thread when the answer holds ``details`` per prompt token (many objects
    for a long prompt), which also bound it by ``--max-token-details``."""

    build: Callable[[PromptOutcome], BaseModel]
    details: TokenDetails | None = None


def text_ppls(outcome: object) -> list[float]:
    """Per-text PPL of a finished request (texts with no scored token have none)."""
    if isinstance(outcome, ScoreOutcome):
        return [r.ppl for r in outcome.response.results if r.ppl is not None]
    if isinstance(outcome, PromptOutcome):
        ppls = []
        for seq, scores in zip(outcome.sequences, outcome.scores, strict=True):
            lps = [float(scores.logprobs[j + seq.shift]) for j, s in enumerate(seq.scored) if s]
            if lps:
                ppls.append(safe_exp(-math.fsum(lps) / len(lps)))
        return ppls
    return []
