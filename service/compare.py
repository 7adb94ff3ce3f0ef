"""Two served models on the same texts: each model's scores, the bits-per-byte ratio, and,
with identical tokenizers, position-by-position comparisons of the full distributions
(see ``scoring.compare``). Each model's windows go through its own scheduler,
concurrently; token-level comparison needs each text in one window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.backends.base import ForwardResult
from service.errors import InvalidRequest, LMScoreError, TooLarge
from service.results import build_result
from service.schemas import (
    CompareRequest,
    CompareResponse,
    CompareResult,
    CompareToken,
    ModelScores,
    TextResult,
    Usage,
)
from service.scoring.compare import binoculars, bits_per_byte_ratio, compare_positions
from service.scoring.windows import Window
from service.sequences import (
    RunOptions,
    ScoredSequence,
    checked,
    encode,
    fit_to_context,
    forward_items,
    stitch,
    text_sequence,
)
from service.served import CompareOutcome, RequestTiming, ServedModel
from service.tasks import gather_or_cancel


@dataclass(frozen=True)
class Scored:
    """One model's view of the texts: sequences, their windows and forward results."""

    seqs: list[ScoredSequence]
    windows: list[list[Window]]
    outputs: list[list[ForwardResult]]
    timing: RequestTiming

    def text_result(self, model: ServedModel, i: int) -> TextResult:
        scores = stitch(self.seqs[i], self.windows[i], self.outputs[i], RunOptions())
        return build_result(
            self.seqs[i], scores, return_tokens=False, top_k=0, token_text=model.token_text
        )


def check_pair(req: CompareRequest, a: ServedModel, b: ServedModel, max_chars: int) -> bool:
    """Refuse what cannot be compared (422 naming the field); whether the tokenizers match."""
    if a.name == b.name:
        raise InvalidRequest("compare two different models", param="models")
    same = a.tokenizer_fingerprint == b.tokenizer_fingerprint
    if req.token_level:
        if not same:
            raise InvalidRequest(
                f"{a.name} and {b.name} have different tokenizers: token-level comparison "
                "is undefined (bits_per_byte_ratio compares any two models)",
                param="token_level",
            )
        for model in (a, b):
            if not model.backend.info.full_distribution:
                raise InvalidRequest(
                    f"model {model.name!r} returns top-k logprobs only", param="token_level"
                )
    if req.token_level and sum(len(t) for t in req.texts) > max_chars:
        raise TooLarge(
            f"token-level comparison keeps both models' full distributions: at most "
            f"{max_chars} characters per request",
            param="texts",
        )
    return same


async def score_with(
    model: ServedModel,
    texts: Sequence[str],
    token_level: bool,
    deadline: float,
    *,
    every_byte: bool,
    max_positions: int,
) -> Scored:
    """Tokenize and score ``texts`` under ``model``; one window each (over-long: 422).

    With ``every_byte`` the first token is scored too, given the model's BOS: two models
    whose tokenizers differ would otherwise leave first tokens of different lengths
    unscored, and their bits per byte would cover different bytes of the text.
    ``max_positions``: at most this many tokens in all (token level: memory grows with
    positions x vocabulary, and a character may be four tokens)."""
    encoded = await model.prepare(encode, model.backend.tokenizer, list(texts))
    positions = sum(len(one.ids) for one in encoded)
    if token_level and positions > max_positions:
        raise TooLarge(
            f"token-level comparison keeps both models' full distributions: the texts are "
            f"{positions} tokens, at most {max_positions} per request",
            param="texts",
        )
    why = "scoring every byte with another tokenizer's model"
    bos = model.start_token("models", why) if every_byte else None
    seqs = [text_sequence(text, one, bos) for text, one in zip(texts, encoded, strict=True)]
    model.check_vocabulary(
        [seq.token_ids for seq in seqs], [f"texts[{i}]" for i in range(len(seqs))]
    )
    options = RunOptions(with_full=token_level)
    windows = [
        fit_to_context(seq, model.context, "error", None, f"texts[{i}]", offer_overflow=False)
        for i, seq in enumerate(seqs)
    ]
    items = [forward_items(s, w, options) for s, w in zip(seqs, windows, strict=True)]
    scored = await model.scheduler.submit([i for group in items for i in group], deadline)
    results = iter(s.result for s in scored)
    outputs = [
        [checked(next(results), f"texts[{i}]") for _ in group] for i, group in enumerate(items)
    ]
    return Scored(seqs, windows, outputs, RequestTiming.of(scored))


async def score_pair(
    req: CompareRequest,
    models: tuple[ServedModel, ServedModel],
    same: bool,
    max_positions: int,
    deadline: float,
) -> CompareOutcome:
    """The texts of ``req`` under both models at once (each through its own scheduler),
    compared; ``same``: the tokenizers are identical (see ``check_pair``)."""
    a, b = await gather_or_cancel(
        *(
            score_with(
                m,
                req.texts,
                req.token_level,
                deadline,
                every_byte=not same,
                max_positions=max_positions,
            )
            for m in models
        )
    )
    # Off the event loop: token-level comparison walks [positions, vocabulary] arrays in
    # float64 (hundreds of MB per long text) that would stall every request. On the first
    # model's preparation thread: one comparison at a time, so their memory stays bounded.
    response = await models[0].prepare(build_response, req, models, (a, b), same)
    queue_s = max(a.timing.queue_s, b.timing.queue_s)
    return CompareOutcome(
        response, RequestTiming(queue_s, a.timing.inference_s + b.timing.inference_s)
    )


def build_response(
    req: CompareRequest,
    models: tuple[ServedModel, ServedModel],
    scored: tuple[Scored, Scored],
    same_tokenizer: bool,
) -> CompareResponse:
    """Per text: both models' scores, their bits-per-byte ratio, and with ``token_level``
    the position-by-position comparison."""
    results = []
    for i in range(len(req.texts)):
        a, b = (side.text_result(model, i) for model, side in zip(models, scored, strict=True))
        result = CompareResult(
            scores=[_scores(models[0].name, a), _scores(models[1].name, b)],
            bits_per_byte_ratio=bits_per_byte_ratio(a.bits_per_byte, b.bits_per_byte),
        )
        if req.token_level and scored[0].outputs[i]:
            seq = scored[0].seqs[i]
            outputs = (scored[0].outputs[i][0], scored[1].outputs[i][0])
            _add_token_level(result, models[0], seq, outputs, req.return_tokens)
        results.append(result)
    tokens = sum(len(s.input_ids) for side in scored for s in side.seqs)
    return CompareResponse(
        models=list(req.models),
        same_tokenizer=same_tokenizer,
        results=results,
        usage=Usage(prompt_tokens=tokens),
    )


def _add_token_level(
    result: CompareResult,
    model: ServedModel,
    seq: ScoredSequence,
    outputs: tuple[ForwardResult, ForwardResult],
    return_tokens: bool,
) -> None:
    a, b = outputs
    if a.full_logprobs is None or b.full_logprobs is None or len(a.logprobs) == 0:
        return
    positions = compare_positions(a.full_logprobs, b.full_logprobs)
    result.kl_divergence = float(positions.kl.mean())
    result.top1_agreement = float(positions.agree.mean())
    result.binoculars = binoculars(-b.logprobs.astype(np.float64), positions.cross_entropy)
    if return_tokens:
        result.tokens = [
            CompareToken(
                id=token,
                text=seq.text[slice(*seq.offsets[j])],  # as score/text: the tokens tile the text
                kl=None if j == 0 else float(positions.kl[j - 1]),
                agree=None if j == 0 else bool(positions.agree[j - 1]),
            )
            for j, token in enumerate(seq.token_ids)
        ]


def _scores(name: str, r: TextResult) -> ModelScores:
    return ModelScores(
        model=name,
        num_tokens=r.num_tokens,
        num_scored_tokens=r.num_scored_tokens,
        sum_logprob=r.sum_logprob,
        ppl=r.ppl,
        bits_per_byte=r.bits_per_byte,
        bits_per_char=r.bits_per_char,
    )


def models_param(error: LMScoreError, index: int) -> LMScoreError:
    """A model lookup error pointed at ``models[index]``."""
    error.param = f"models[{index}]"
    return error
