"""The core every door calls: admit, validate, tokenize, submit, await, assemble.

A request's journey, top to bottom: find the model; check the request's size; tokenize
(or render the chat template) on the model's preparation thread; fit each sequence into
the context; hand the windows to the model's scheduler; stitch the scores back and build
the response. Doors convert their wire format to ``schemas`` and back, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from service import compare as comparison
from service import continuations, metrics
from service.chat_prompt import ChatPromptOptions, chat_prompt_sequence
from service.chat_sequences import chat_sequences
from service.errors import InvalidRequest, NotFound, Timeout
from service.memory import IdleTrimmer
from service.models import ModelSpec
from service.references import (
    check_profile,
    find_reference,
    for_profile,
    load_reference_arg,
    reference_list,
    with_reference,
)
from service.registry import ModelRegistry
from service.results import DistributionOptions, aggregate, build_result
from service.schemas import (
    ChatScoreRequest,
    CompareRequest,
    ContinuationRequest,
    ModelCard,
    ModelList,
    ReferenceList,
    ScoreResponse,
    TextResult,
    TextScoreRequest,
    Usage,
)
from service.scoring.reference import ProfileError, ReferenceProfile
from service.sequences import (
    RunOptions,
    ScoredSequence,
    context_exceeded,
    encode,
    prompt_sequences,
    text_sequence,
)
from service.served import (
    CompareOutcome,
    ContinuationOutcome,
    PromptAnswer,
    PromptOutcome,
    RequestTiming,
    ScoreOutcome,
    ServedModel,
    text_ppls,
)
from service.settings import Settings
from service.validation import (
    TokenDetails,
    check_conversation,
    check_length,
    check_texts,
    check_token_details,
    check_token_ids,
    validate_chat,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Engine:
    """Scores requests against the registry's models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings)
        self.references: dict[str, ReferenceProfile] = {}
        self.inflight = 0
        self._idle = asyncio.Event()
        self.trimmer = IdleTrimmer(settings.memory_trim_after_idle_s, lambda: self.inflight == 0)

    # ---- lifecycle -------------------------------------------------------------------
    async def load(self, specs: list[ModelSpec]) -> None:
        """Load and warm up every model and check the reference profiles against them,
        then take work."""
        profiles = [load_reference_arg(arg) for arg in self.settings.reference]
        await self.registry.load(specs)
        for profile in profiles:
            check_profile(profile, self.registry.models)
            if profile.name in self.references:
                raise ProfileError(f"two reference profiles are named {profile.name!r}")
            self.references[profile.name] = profile
        self.registry.ready = True

    @property
    def ready(self) -> bool:
        return self.registry.ready

    @property
    def draining(self) -> bool:
        return self.registry.draining

    async def drain(self, grace_s: float) -> bool:
        """Refuse new work (503) and wait up to ``grace_s`` for admitted work to finish.

        Returns whether everything admitted finished in time.
        """
        self.registry.draining = True
        if self.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
        return self.inflight == 0

    async def close(self, wait_s: float = 30.0) -> None:
        """Fail whatever still waits (503) and release the models, waiting at most
        ``wait_s`` per model for a forward pass in flight."""
        await self.registry.close(wait_s)

    def list_models(self) -> ModelList:
        return self.registry.list_models()

    def model_card(self, name: str) -> ModelCard:
        """One served model's card, as ``list_models`` lists it (NotFound if unknown)."""
        return self.registry.card(name)

    def list_references(self) -> ReferenceList:
        """The reference profiles loaded with ``--reference``."""
        return reference_list(self.references.values())

    # ---- requests --------------------------------------------------------------------
    async def score_text(
        self, req: TextScoreRequest, timeout_s: float | None = None
    ) -> ScoreOutcome:
        """Score plain texts: every token given all tokens before it.

        ``timeout_s`` (e.g. a gRPC deadline) shortens ``--request-timeout-s``, never extends it.
        """
        model = self.registry.get(req.model)
        check_texts(req.texts, self.settings, "texts")
        profile = find_reference(self.references, req.reference, model.name)
        work = functools.partial(self._score_texts, model, for_profile(req, profile))
        outcome = await self._admitted(work, [model], "score_text", timeout_s, len(req.texts))
        return with_reference(outcome, profile)

    async def score_chat(
        self, req: ChatScoreRequest, timeout_s: float | None = None
    ) -> ScoreOutcome:
        """Score conversations rendered with the model's chat template."""
        model = self.registry.get(req.model)
        validate_chat(req, model.backend.tokenizer, model.name, self.settings)
        profile = find_reference(self.references, req.reference, model.name)
        work = functools.partial(self._score_chats, model, for_profile(req, profile))
        outcome = await self._admitted(
            work, [model], "score_chat", timeout_s, len(req.conversations)
        )
        return with_reference(outcome, profile)

    async def _admitted(
        self,
        work: Callable[[float], Awaitable[T]],
        models: Sequence[ServedModel],
        endpoint: str,
        timeout_s: float | None,
        windows: int,
    ) -> T:
        """Run work under the request deadline, counted as in flight, once every model it
        uses holds queue room for ``windows`` windows (the fewest the request can need:
        Overloaded now, before tokenizing, if one has none); record the PPL of every scored
        text, under the first model, for the drift histogram."""
        with contextlib.ExitStack() as holds:
            for model in models:
                holds.enter_context(model.scheduler.reserve(max(1, windows)))
            outcome = await self._in_flight(work, timeout_s)
        ppls = text_ppls(outcome)
        if ppls:  # no empty series for endpoints that score no text's PPL
            histogram = metrics.TEXT_PPL.labels(model=models[0].name, endpoint=endpoint)
            for ppl in ppls:
                histogram.observe(ppl)
        return outcome

    async def _in_flight(
        self, work: Callable[[float], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """``work(deadline)`` under the request timeout (or ``timeout_s`` when shorter),
        counted as in flight: drain waits for it, the idle trimmer does not run under it."""
        timeout = self.settings.request_timeout_s
        if timeout_s is not None:
            timeout = max(0.0, min(timeout, timeout_s))
        self.inflight += 1
        self._idle.clear()
        metrics.INFLIGHT.inc()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a client's
            # cancel that lands just as the work finishes (counted then as answered).
            async with asyncio.timeout(timeout):
                return await work(time.monotonic() + timeout)
        except TimeoutError as exc:
            raise Timeout(f"the request took longer than {timeout:g} s") from exc
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.dec()
            if self.inflight == 0:
                self._idle.set()
                self.trimmer.idle()

    async def tokenizer_call(self, model: ServedModel, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on ``model``'s tokenizer thread for the tokenizer routes
        (``/tokenize``, ``/detokenize``): under the request timeout and counted in flight
        like scoring work, since it holds the same thread scoring requests tokenize on."""

        async def work(deadline: float) -> T:
            return await model.prepare(fn, *args)

        return await self._in_flight(work)

    async def _score_texts(
        self, model: ServedModel, req: TextScoreRequest, deadline: float
    ) -> ScoreOutcome:
        bos = model.start_token("prepend_bos", "prepend_bos") if req.prepend_bos else None
        encoded = await model.prepare(encode, model.backend.tokenizer, list(req.texts))
        seqs = [text_sequence(text, one, bos) for text, one in zip(req.texts, encoded, strict=True)]
        params = [f"texts[{i}]" for i in range(len(seqs))]
        results = await self._score(
            model,
            seqs,
            params,
            req,
            deadline,
            lambda seq, scores, i: build_result(
                seq,
                scores,
                return_tokens=req.return_tokens,
                top_k=self._top_k(req),
                token_text=model.token_text,
                distribution=_distribution(req),
            ),
        )
        return self._response(model, seqs, results)

    async def _score_chats(
        self, model: ServedModel, req: ChatScoreRequest, deadline: float
    ) -> ScoreOutcome:
        conversations = [[m.model_dump() for m in conv] for conv in req.conversations]
        seqs = await model.prepare(
            chat_sequences,
            model.backend.tokenizer,
            conversations,
            req.score_roles,
            req.include_end_of_turn,
            deadline,
        )
        params = [f"conversations[{i}]" for i in range(len(seqs))]
        roles = [[m.role for m in conv] for conv in req.conversations]
        results = await self._score(
            model,
            seqs,
            params,
            req,
            deadline,
            lambda seq, scores, i: build_result(
                seq,
                scores,
                return_tokens=req.return_tokens,
                top_k=self._top_k(req),
                token_text=model.token_text,
                roles=roles[i],
                score_roles=req.score_roles,
                distribution=_distribution(req),
            ),
        )
        return self._response(model, seqs, results)

    async def score_prompts(
        self,
        model_name: str | None,
        prompts: Sequence[str | Sequence[int]],
        options: RunOptions,
        timeout_s: float | None = None,
        add_special_tokens: bool = True,
        params: Sequence[str] | None = None,
        answer: PromptAnswer | None = None,
    ) -> PromptOutcome:
        """Score raw prompts (texts or token ids) for the OpenAI-compatible door: every
        token given the ones before it, plus the distribution after the last token when
        ``options.next_token``. Text prompts get the special tokens their tokenizer adds
        (a BOS) unless ``add_special_tokens`` is False, as in vLLM; token ids are taken as
        given. Prompts must fit the context. ``params`` name the prompts in errors
        (default ``prompt[i]``); the door's ``answer`` is built within the request."""
        model = self.registry.get(model_name)
        names = (
            list(params) if params is not None else [f"prompt[{i}]" for i in range(len(prompts))]
        )
        check_texts(prompts, self.settings, "prompt", names)
        check_token_ids(prompts, model.vocab_limit, names)
        for name, prompt in zip(names, prompts, strict=True):
            # Before its sequence is built: that decodes every id on the model's thread.
            if not isinstance(prompt, str) and len(prompt) > model.context:
                raise context_exceeded(len(prompt), model.context, name, offer_overflow=False)

        prepare = functools.partial(
            prompt_sequences, model.backend.tokenizer, prompts, add_special_tokens
        )
        work = functools.partial(self._score_prompts, model, prepare, names, options, answer)
        return await self._admitted(work, [model], "completions", timeout_s, len(prompts))

    async def score_chat_prompt(
        self,
        model_name: str | None,
        messages: list[dict[str, str]],
        options: RunOptions,
        template: ChatPromptOptions,
        timeout_s: float | None = None,
        answer: PromptAnswer | None = None,
    ) -> PromptOutcome:
        """Score a conversation rendered by the model's chat template as one prompt, for the
        OpenAI-compatible chat door: every token given the ones before it (nothing masked),
        plus the distribution after it when ``options.next_token``; ``answer`` as in
        ``score_prompts``."""
        model = self.registry.get(model_name)
        check_conversation([m["content"] for m in messages], self.settings, "messages")
        tokenizer = model.backend.tokenizer

        def prepare() -> list[ScoredSequence]:
            return [chat_prompt_sequence(tokenizer, messages, template)]

        work = functools.partial(self._score_prompts, model, prepare, ["messages"], options, answer)
        return await self._admitted(work, [model], "chat_completions", timeout_s, 1)

    async def _score_prompts(
        self,
        model: ServedModel,
        prepare: Callable[[], list[ScoredSequence]],
        params: list[str],
        options: RunOptions,
        answer: PromptAnswer | None,
        deadline: float,
    ) -> PromptOutcome:
        """Sequences made on the model's preparation thread, scored as they are, and the
        door's answer built from them. A sequence over the context is refused, naming its
        ``params`` entry; an answer with more per-token details than
        ``--max-token-details``, before any forward pass."""
        seqs = await model.prepare(prepare)
        details = answer.details if answer is not None else None
        counts = [len(seq.input_ids) for seq in seqs]
        # A prompt over the context is refused as such (422) by the scoring below.
        if details is not None and max(counts, default=0) <= model.context:
            check_token_details(counts, details, self.settings.max_token_details)
        scores, timing = await model.score_sequences(seqs, params, options, deadline)
        outcome = PromptOutcome(model, seqs, scores, timing)
        if answer is None:
            return outcome
        build = answer.build
        built = await model.prepare(build, outcome) if details is not None else build(outcome)
        return dataclasses.replace(outcome, answer=built)

    async def score_continuations(
        self, req: ContinuationRequest, timeout_s: float | None = None
    ) -> ContinuationOutcome:
        """Each continuation's log-likelihood given the shared context (computed once where
        the backend takes token trees)."""
        model = self.registry.get(req.model)
        check_length(req.context, self.settings.max_chars_per_text, "context")
        check_texts(req.continuations, self.settings, "continuations")
        work = functools.partial(continuations.score, model, req)
        # One tree window where the backend takes token trees: the fewest it can need.
        return await self._admitted(work, [model], "score_continuations", timeout_s, 1)

    async def compare_models(
        self, req: CompareRequest, timeout_s: float | None = None
    ) -> CompareOutcome:
        """The texts under two models: both models' scores, the bits-per-byte ratio and,
        with ``token_level``, the comparison of their distributions position by position."""
        models = (self._compared(req, 0), self._compared(req, 1))
        check_texts(req.texts, self.settings, "texts")
        same = comparison.check_pair(req, *models, self.settings.max_compare_chars)
        limit = self.settings.max_compare_chars  # tokens too: a character may be several
        work = functools.partial(comparison.score_pair, req, models, same, limit)
        return await self._admitted(work, models, "score_compare", timeout_s, len(req.texts))

    def _compared(self, req: CompareRequest, index: int) -> ServedModel:
        try:
            return self.registry.get(req.models[index])
        except NotFound as exc:
            raise comparison.models_param(exc, index) from None

    async def _score(
        self,
        model: ServedModel,
        seqs: list[ScoredSequence],
        params: list[str],
        req: TextScoreRequest | ChatScoreRequest,
        deadline: float,
        build: Callable[[ScoredSequence, Any, int], TextResult],
    ) -> tuple[list[TextResult], RequestTiming]:
        words = _distribution(req).words
        if (req.with_stats or words) and not model.backend.info.full_distribution:
            raise InvalidRequest(
                f"the {model.backend.info.backend} backend returns top-k logprobs only; "
                "entropy, min_k and words need the full distribution (use --backend "
                "transformers)",
                param="return_entropy" if req.return_entropy else "min_k" if req.min_k else "words",
            )
        if req.return_tokens:
            truncated = req.overflow == "truncate"
            counts = [min(len(s.token_ids), model.context) if truncated else len(s.token_ids)
                      for s in seqs]  # fmt: skip
            details = TokenDetails(1 + req.top_k)
            check_token_details(counts, details, self.settings.max_token_details)
        options = RunOptions(
            req.overflow,
            req.stride,
            self._top_k(req),
            req.return_tokens,
            next_token=words,
            with_stats=req.with_stats,
            with_bow=words,
        )
        stitched, timing = await model.score_sequences(seqs, params, options, deadline)

        def build_all() -> list[TextResult]:
            pairs = enumerate(zip(seqs, stitched, strict=True))
            return [build(seq, scores, i) for i, (seq, scores) in pairs]

        # Per-token results are many Python objects (a long text's take seconds): built on
        # the model's preparation thread, so the event loop keeps answering meanwhile.
        results = await model.prepare(build_all) if req.return_tokens else build_all()
        return results, timing

    def _response(
        self,
        model: ServedModel,
        seqs: Sequence[ScoredSequence],
        scored: tuple[list[TextResult], RequestTiming],
    ) -> ScoreOutcome:
        results, timing = scored
        response = ScoreResponse(
            model=model.name,
            model_revision=model.revision,
            results=results,
            aggregate=aggregate(results),
            usage=Usage(prompt_tokens=sum(len(s.input_ids) for s in seqs)),
        )
        return ScoreOutcome(response, timing)

    def get_model(self, name: str | None) -> ServedModel:
        """A served, ready model (NotFound, or Unavailable while loading or draining)."""
        return self.registry.get(name)

    @staticmethod
    def _top_k(req: TextScoreRequest | ChatScoreRequest) -> int:
        return req.top_k if req.return_tokens else 0


def _distribution(req: TextScoreRequest | ChatScoreRequest) -> DistributionOptions:
    """The full-distribution scores a request asks for (words: texts only)."""
    words = isinstance(req, TextScoreRequest) and req.words
    return DistributionOptions(req.return_entropy, req.min_k, req.min_k_percent, words)
