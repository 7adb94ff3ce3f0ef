"""The completions door's per-token answers built from given scores: a token the model rules
out (logprob -inf) is reported as OpenAI's -9999, so the answer stays valid JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.openai_logprobs import (
    LOWEST_LOGPROB,
    LegacyLogprobsBuilder,
    finite,
    prompt_logprobs,
)
from service.api.openai_schemas import CompletionChoice
from service.sequences import ScoredSequence, SequenceScores

INF = float("-inf")


def scores(
    logprobs: list[float], top_ids: list[list[int]], top_lps: list[list[float]]
) -> SequenceScores:
    return SequenceScores(
        logprobs=np.array(logprobs, dtype=np.float32),
        ranks=np.array([0, 7, 1], dtype=np.int64),
        top_ids=np.array(top_ids, dtype=np.int64),
        top_logprobs=np.array(top_lps, dtype=np.float32),
    )


def test_finite_raises_minus_infinity_to_the_openai_floor() -> None:
    assert finite(INF) == LOWEST_LOGPROB == -9999.0
    assert finite(-1e6) == -9999.0
    assert finite(-0.25) == -0.25


def test_the_legacy_lists_of_a_ruled_out_token_are_valid_json() -> None:
    builder = LegacyLogprobsBuilder(lambda t: f"t{t}", k=2)
    builder.add(3, "a", None, [], [])
    builder.add(4, "b", INF, np.array([9, 8]), np.array([-0.1, INF], dtype=np.float32))
    lists = builder.lists
    assert lists.token_logprobs == [None, -9999.0]
    assert lists.top_logprobs[0] is None
    assert lists.top_logprobs[1] == pytest.approx({"t9": -0.1, "t8": -9999.0, "b": -9999.0})
    text = json.dumps(lists.model_dump(mode="json"), allow_nan=False)
    assert "Infinity" not in text
    assert builder.text == "ab" and lists.text_offset == [0, 1]


def test_prompt_logprobs_of_a_ruled_out_token_are_valid_json() -> None:
    seq = ScoredSequence("abc", [5, 6, 7], [(0, 1), (1, 2), (2, 3)], [False, True, True])
    got = prompt_logprobs(
        seq,
        scores([np.nan, INF, -0.5], [[0, 0], [1, 2], [7, 1]], [[0, 0], [-0.2, INF], [-0.5, -2]]),
        k=2,
        token_text=str,
        tokenizer=None,
    )
    assert got[0] is None
    assert got[1] is not None and list(got[1]) == ["6", "1", "2"]
    assert got[1]["6"].logprob == -9999.0 and got[1]["6"].rank == 7
    assert got[1]["2"].logprob == -9999.0 and got[1]["2"].rank == 2
    # The prompt token among the top k keeps its place first, with its top-k rank.
    assert got[2] is not None and list(got[2]) == ["7", "1"] and got[2]["7"].rank == 1
    choice = CompletionChoice(
        index=0, text="abc", logprobs=None, finish_reason="length", prompt_logprobs=got
    )
    json.dumps(choice.model_dump(mode="json"), allow_nan=False)
