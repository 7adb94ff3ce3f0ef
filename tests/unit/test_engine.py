"""Engine.score_text against plain float64 computations on the tiny model."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from byte_tokens import scored_counts, token_bytes
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL, batch_invariance_atol

from service.engine import Engine
from service.errors import InvalidRequest
from service.schemas import ScoreResponse, TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

LN2 = math.log(2.0)
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Grüße aus München!",
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567 café naïve",
    "Ωμέγα ñandú 😎 ℝ²",  # unseen characters: byte-level pieces, overlapping offsets
]
LONG_TEXT = " ".join(
    ["the quick brown fox jumps over a lazy dog while the model scores every token"] * 12
)
RefFn = Callable[[list[int]], np.ndarray]


async def score(engine: Engine, texts: list[str], **kwargs: Any) -> ScoreResponse:
    return (await engine.score_text(TextScoreRequest(texts=texts, **kwargs))).response


def encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def token_logprobs(result: Any) -> np.ndarray:
    return np.array([np.nan if t.logprob is None else t.logprob for t in result.tokens])


async def test_numbers_equal_float64_reference(
    tiny_engine: Engine, tokenizer: Any, reference_token_logprobs: RefFn
) -> None:
    response = await score(tiny_engine, TEXTS)
    for text, result in zip(TEXTS, response.results, strict=True):
        ids, _ = encode(tokenizer, text)
        ref = reference_token_logprobs(ids)
        total = float(ref.sum())
        # The first token has no context; a character it splits counts with the token
        # completing it, and only the bytes of the scored tokens count.
        nbytes, nchars = scored_counts(text, token_bytes(tokenizer, ids), range(1, len(ids)))
        assert result.num_tokens == len(ids)
        assert result.num_scored_tokens == len(ids) - 1
        # Four texts batched vs a lone float64 forward: the contract's batch tolerance.
        assert result.sum_logprob == pytest.approx(
            total, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
        assert result.mean_nll == pytest.approx(
            -total / (len(ids) - 1), rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
        assert result.ppl == pytest.approx(
            math.exp(-total / (len(ids) - 1)), rel=BATCH_INVARIANCE_REL
        )
        bits = -total / LN2
        assert result.bits_per_byte == pytest.approx(bits / nbytes, rel=BATCH_INVARIANCE_REL)
        assert result.bits_per_char == pytest.approx(bits / nchars, rel=BATCH_INVARIANCE_REL)
        assert result.truncated is False
    assert response.usage.prompt_tokens == sum(r.num_tokens for r in response.results)
    assert response.model == "default" and response.model_revision == "sha256:test"


async def test_tokens_sum_and_tile_the_text(tiny_engine: Engine, tokenizer: Any) -> None:
    response = await score(tiny_engine, TEXTS, return_tokens=True, top_k=3)
    for text, result in zip(TEXTS, response.results, strict=True):
        tokens = result.tokens
        assert [t.id for t in tokens] == encode(tokenizer, text)[0]
        assert "".join(t.text for t in tokens) == text
        assert tokens[0].start == 0 and tokens[-1].end == len(text)
        for prev, cur in itertools.pairwise(tokens):
            assert prev.end == cur.start
        assert all(text[t.start : t.end] == t.text for t in tokens)
        assert tokens[0].logprob is None and tokens[0].rank is None and tokens[0].top is None
        lps = token_logprobs(result)[1:]
        assert math.fsum(lps) == pytest.approx(result.sum_logprob, abs=1e-6)


async def test_rank_and_top_are_consistent(
    tiny_engine: Engine, tokenizer: Any, reference_logprobs: RefFn
) -> None:
    # A text whose last token is the model's argmax, so a rank-1 token exists.
    ids = encode(tokenizer, TEXTS[0])[0]
    rows = reference_logprobs(ids)
    greedy = None
    for p in range(2, len(ids)):
        best = int(np.argmax(rows[p - 1]))
        candidate = tokenizer.decode([*ids[:p], best])
        if best > 2 and encode(tokenizer, candidate)[0] == [*ids[:p], best]:
            greedy = candidate
            break
    assert greedy is not None
    response = await score(tiny_engine, [greedy, TEXTS[1]], return_tokens=True, top_k=5)
    assert response.results[0].tokens[-1].rank == 1
    for result in response.results:
        for token in result.tokens[1:]:
            top_ids = [alt.id for alt in token.top]
            assert len(top_ids) == 5
            assert all(a.logprob >= b.logprob for a, b in itertools.pairwise(token.top))
            assert token.rank >= 1 and token.logprob <= token.top[0].logprob
            if token.id in top_ids:
                assert token.rank == top_ids.index(token.id) + 1
                assert token.top[token.rank - 1].logprob == token.logprob
            else:
                assert token.rank > 5 and token.logprob <= token.top[-1].logprob
            assert all(alt.text == tokenizer.decode([alt.id]) for alt in token.top)


async def test_prepend_bos_scores_the_first_token(
    tiny_engine: Engine, tokenizer: Any, reference_token_logprobs: RefFn
) -> None:
    text = TEXTS[0]
    ids = encode(tokenizer, text)[0]
    ref = reference_token_logprobs([1, *ids])
    (result,) = (await score(tiny_engine, [text], prepend_bos=True, return_tokens=True)).results
    assert result.num_tokens == len(ids) and result.num_scored_tokens == len(ids)
    assert result.tokens[0].logprob == pytest.approx(ref[0], abs=1e-4)
    assert result.tokens[0].rank >= 1
    assert result.sum_logprob == pytest.approx(ref.sum(), abs=1e-4 * len(ids))
    assert result.bits_per_byte == pytest.approx(-ref.sum() / LN2 / len(text.encode()), rel=1e-4)


async def test_one_token_text(tiny_engine: Engine, tokenizer: Any) -> None:
    assert len(encode(tokenizer, "a")[0]) == 1
    plain, with_bos = (
        await score(tiny_engine, ["a"]),
        await score(tiny_engine, ["a"], prepend_bos=True),
    )
    (result,) = plain.results
    assert (result.num_tokens, result.num_scored_tokens, result.sum_logprob) == (1, 0, 0.0)
    assert result.mean_nll is None and result.ppl is None
    assert result.bits_per_byte is None and result.bits_per_char is None
    assert plain.aggregate.num_scored_tokens == 0 and plain.aggregate.ppl is None
    assert with_bos.results[0].num_scored_tokens == 1
    assert with_bos.results[0].sum_logprob < 0


async def test_results_do_not_depend_on_other_texts(tiny_engine: Engine) -> None:
    alone = (await score(tiny_engine, [TEXTS[2]])).results[0]
    mixed = await score(tiny_engine, [TEXTS[0], "a", TEXTS[2], LONG_TEXT[:100]])
    together = mixed.results[2]
    assert together.num_scored_tokens == alone.num_scored_tokens
    assert together.sum_logprob == pytest.approx(alone.sum_logprob, rel=BATCH_INVARIANCE_REL)
    assert together.bits_per_char == pytest.approx(alone.bits_per_char, rel=BATCH_INVARIANCE_REL)


async def test_aggregate_is_token_weighted(tiny_engine: Engine) -> None:
    response = await score(tiny_engine, [TEXTS[0], "a dog"])
    a, b = response.results
    agg = response.aggregate
    assert agg.num_scored_tokens == a.num_scored_tokens + b.num_scored_tokens
    assert agg.sum_logprob == pytest.approx(a.sum_logprob + b.sum_logprob, abs=1e-9)
    assert agg.mean_nll == pytest.approx(-agg.sum_logprob / agg.num_scored_tokens, rel=1e-12)
    assert agg.ppl == pytest.approx(math.exp(agg.mean_nll), rel=1e-12)
    assert abs(agg.mean_nll - (a.mean_nll + b.mean_nll) / 2) > 1e-3  # not a mean of means


async def test_overflow_error_names_the_text(tiny_engine: Engine) -> None:
    with pytest.raises(InvalidRequest) as info:
        await score(tiny_engine, ["short", LONG_TEXT])
    assert info.value.param == "texts[1]"


async def test_overflow_truncate(
    tiny_engine: Engine, tokenizer: Any, reference_token_logprobs: RefFn
) -> None:
    ids = encode(tokenizer, LONG_TEXT)[0]
    assert len(ids) > 2 * 64
    response = await score(tiny_engine, [LONG_TEXT], overflow="truncate", return_tokens=True)
    (result,) = response.results
    assert result.truncated is True
    assert (result.num_tokens, result.num_scored_tokens) == (64, 63)
    assert [t.id for t in result.tokens] == ids[:64]
    ref = reference_token_logprobs(ids[:64])
    assert np.max(np.abs(token_logprobs(result)[1:] - ref)) <= 1e-4
    with_bos = (
        await score(tiny_engine, [LONG_TEXT], overflow="truncate", prepend_bos=True)
    ).results
    assert (with_bos[0].num_tokens, with_bos[0].num_scored_tokens) == (63, 63)


def windowed_reference(ref: RefFn, ids: list[int], context: int, stride: int) -> np.ndarray:
    """HF-guide strided perplexity, window by window in float64: logprob per position."""
    out = np.full(len(ids), np.nan)
    end = min(context, len(ids))
    out[1:end] = ref(ids[:end])
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        begin = max(0, new_end - context)
        out[end:new_end] = ref(ids[begin:new_end])[end - begin - 1 :]
        end = new_end
    return out


@pytest.mark.parametrize("stride", [None, 1, 20, 63])
async def test_sliding_window_matches_windowed_reference(
    tiny_engine: Engine, tokenizer: Any, reference_token_logprobs: RefFn, stride: int | None
) -> None:
    ids = encode(tokenizer, LONG_TEXT)[0]
    response = await score(
        tiny_engine, [LONG_TEXT], overflow="sliding_window", stride=stride, return_tokens=True
    )
    (result,) = response.results
    assert result.num_tokens == len(ids) and result.num_scored_tokens == len(ids) - 1
    assert result.truncated is False
    expected = windowed_reference(reference_token_logprobs, ids, 64, stride or 32)
    # Windows batched together vs lone float64 windows: the contract's batch tolerance.
    assert np.max(np.abs(token_logprobs(result)[1:] - expected[1:])) <= batch_invariance_atol(
        expected[1:]
    )
    assert result.sum_logprob == pytest.approx(
        expected[1:].sum(), rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
    )


async def test_sliding_window_on_a_fitting_text_is_the_plain_result(tiny_engine: Engine) -> None:
    plain = (await score(tiny_engine, [TEXTS[0]])).results[0]
    for stride in (1, 63):
        sliding = (
            await score(tiny_engine, [TEXTS[0]], overflow="sliding_window", stride=stride)
        ).results[0]
        assert sliding.num_scored_tokens == plain.num_scored_tokens
        # Two requests through different code paths: the contract's batch tolerance.
        assert sliding.sum_logprob == pytest.approx(
            plain.sum_logprob, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )


async def test_more_history_approaches_the_full_context(
    engine_factory: Callable[..., Engine], tokenizer: Any, reference_token_logprobs: RefFn
) -> None:
    # A text that fits the model (64) scored under a 16-token cap: stride 1 gives every
    # token 15 tokens of history, stride 15 as little as 1, so stride 1 is closer to full.
    varied = " ".join(TEXTS * 3)
    offsets = encode(tokenizer, varied)[1]
    text = varied[: offsets[59][1]]
    ids = encode(tokenizer, text)[0]
    assert 40 < len(ids) <= 64
    engine = engine_factory(max_context=16)
    full = reference_token_logprobs(ids)
    errors = {}
    for stride in (1, 15):
        (result,) = (
            await score(
                engine, [text], overflow="sliding_window", stride=stride, return_tokens=True
            )
        ).results
        got = token_logprobs(result)[1:]
        # The first window, then all; windows batched together vs lone float64 forwards:
        # the contract's batch tolerance.
        np.testing.assert_allclose(
            got[:15], full[:15], rtol=BATCH_INVARIANCE_REL, atol=BATCH_INVARIANCE_ABS
        )
        expected = windowed_reference(reference_token_logprobs, ids, 16, stride)
        assert np.max(np.abs(got - expected[1:])) <= batch_invariance_atol(expected[1:])
        errors[stride] = float(np.mean(np.abs(got - full)))
    assert errors[1] < errors[15]
    with pytest.raises(InvalidRequest) as info:
        await score(engine, [text], overflow="sliding_window", stride=16)
    assert info.value.param == "stride"


async def test_per_token_answers_are_bounded(
    engine_factory: Callable[..., Engine], tokenizer: Any
) -> None:
    """return_tokens with top_k 20 on a long text built gigabytes of per-token objects:
    tokens x (1 + top_k) is bounded by --max-token-details (413 naming return_tokens)."""
    from service.errors import TooLarge

    engine = engine_factory(max_token_details=100)
    text = "the model scores every token of this text " * 3
    n = len(tokenizer.encode(text, add_special_tokens=False))
    assert 20 < n <= 64
    fits = await engine.score_text(TextScoreRequest(texts=[text], return_tokens=True))
    assert fits.response.results[0].tokens is not None
    with pytest.raises(TooLarge, match="per-token entries") as caught:
        await engine.score_text(TextScoreRequest(texts=[text], return_tokens=True, top_k=5))
    assert caught.value.param == "return_tokens"
    plain = await engine.score_text(TextScoreRequest(texts=[text], top_k=5))  # no tokens
    assert plain.response.results[0].tokens is None
    long = text * 20  # truncated to the 64-token context: 64 entries
    kept = TextScoreRequest(texts=[long], return_tokens=True, overflow="truncate")
    assert len((await engine.score_text(kept)).response.results[0].tokens or []) == 64
    windows = TextScoreRequest(texts=[long], return_tokens=True, overflow="sliding_window")
    with pytest.raises(TooLarge):
        await engine.score_text(windows)


async def test_a_request_needing_more_windows_than_the_queue_holds_is_too_large(
    engine_factory: Callable[..., Engine],
) -> None:
    """Sliding windows with stride 1 made one request ~37k windows: admitted into an empty
    queue, it kept every other client at 429 until it timed out. Refused (413) now,
    before its windows' tokens are copied out."""
    from service.errors import TooLarge

    engine = engine_factory(max_queue=8)
    long = "the model scores every token of this text " * 12  # past the 64-token context
    request = TextScoreRequest(texts=[long], overflow="sliding_window", stride=2)
    with pytest.raises(TooLarge, match="forward windows") as caught:
        await engine.score_text(request)
    assert caught.value.param == "stride"
    wide = TextScoreRequest(texts=[long], overflow="sliding_window", stride=48)
    assert (await engine.score_text(wide)).response.results[0].num_scored_tokens > 64
    with pytest.raises(TooLarge) as caught:
        await engine.score_text(TextScoreRequest(texts=["a b"] * 9))
    assert caught.value.param == "texts"
    assert len((await engine.score_text(TextScoreRequest(texts=["a b"] * 8))).response.results) == 8


async def test_per_token_results_are_built_off_the_event_loop(
    tiny_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long text's per-token results took seconds to build on the event loop, stalling
    every other client (health checks included); they are built on the model's thread."""
    import threading

    from service import engine as engine_module

    built_on: list[threading.Thread] = []
    real = engine_module.build_result

    def watched(*args: Any, **kwargs: Any) -> Any:
        built_on.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "build_result", watched)
    loop_thread = threading.current_thread()
    await tiny_engine.score_text(TextScoreRequest(texts=["hello world"], return_tokens=True))
    assert built_on and loop_thread not in built_on
    built_on.clear()
    await tiny_engine.score_text(TextScoreRequest(texts=["hello world"]))  # a few numbers
    assert built_on == [loop_thread]
