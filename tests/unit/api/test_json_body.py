"""Large JSON answers encoded in pieces: the same JSON as pydantic's one-call encoding,
cut small enough that no piece holds the interpreter lock for long."""

from __future__ import annotations

import json
import math

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from service.api.json_body import PIECE, encode, json_data, pieces, weight
from service.api.openai_schemas import (
    CompletionChoice,
    CompletionResponse,
    CompletionUsage,
    LegacyLogprobs,
    PromptLogprob,
)
from service.schemas import ScoreResponse
from service.schemas.score import Aggregate, TextResult, TokenScore, TopToken, Usage


def _token(i: int, top_k: int) -> TokenScore:
    first = i == 0
    top = None if first or not top_k else [
        TopToken(id=j, text=f"alt{j} ✓", logprob=-1.0 - j / 7) for j in range(top_k)
    ]  # fmt: skip
    return TokenScore(
        id=i, text=f"t{i}é", start=i, end=i + 1, logprob=None if first else -i / 3,
        rank=None if first else 1 + i % 5, top=top, with_top=top_k > 0,
    )  # fmt: skip


def _result(tokens: int, top_k: int, asked: bool = False) -> TextResult:
    result = TextResult(
        num_tokens=tokens, num_scored_tokens=max(tokens - 1, 0), sum_logprob=-1.25,
        mean_nll=0.5 if tokens > 1 else None, ppl=math.exp(0.5) if tokens > 1 else None,
        bits_per_byte=0.7, bits_per_char=0.8,
        tokens=[_token(i, top_k) for i in range(tokens)] if tokens else None,
    )  # fmt: skip
    if asked:
        result.mark_asked("percentile", "is_outlier")  # null, but shown: asked for
    return result


def _response(*results: TextResult) -> ScoreResponse:
    return ScoreResponse(
        model="tiny", model_revision="r1", results=list(results),
        aggregate=Aggregate(num_scored_tokens=3, sum_logprob=-1.5, mean_nll=0.5, ppl=1.65),
        usage=Usage(prompt_tokens=4),
    )  # fmt: skip


def test_a_large_score_answer_is_the_same_json_in_small_pieces() -> None:
    """Light and heavy results side by side, alternatives on and off, fields a serializer
    leaves out or shows as null: the same JSON, and no piece near the whole."""
    response = _response(
        _result(3, 0), _result(2000, 5, asked=True), _result(0, 0), _result(1500, 0)
    )
    assert weight(response, cap=10**6) > 10 * PIECE
    cut = list(pieces(response))
    whole = b"".join(cut)
    assert whole == encode(response)
    assert json.loads(whole) == json.loads(response.model_dump_json())
    assert len(cut) > 10
    assert max(len(piece) for piece in cut) < len(whole) / 10
    assert json_data(response) == response.model_dump(mode="json")  # for gRPC's ParseDict


def test_a_small_answer_is_one_piece() -> None:
    response = _response(_result(5, 2))
    assert weight(response) <= PIECE
    assert list(pieces(response)) == [response.model_dump_json().encode()]


def test_prompt_logprobs_and_legacy_lists() -> None:
    """Long lists of mappings and of plain values (vLLM's prompt_logprobs, the legacy
    logprobs lists) come out as pydantic writes them."""
    n = 3000
    prompt = [None] + [
        {str(i): PromptLogprob(logprob=-0.5, rank=2, decoded_token=" a"),
         str(i + 1): PromptLogprob(logprob=-1.0, rank=1, decoded_token="ü")}
        for i in range(1, n)
    ]  # fmt: skip
    logprobs = LegacyLogprobs(
        tokens=[f"t{i}" for i in range(n)],
        token_logprobs=[None] + [-i / 9 for i in range(1, n)],
        top_logprobs=[None] + [{"a": -0.1, "b": -2.0} for _ in range(1, n)],
        text_offset=list(range(n)),
    )
    choice = CompletionChoice(
        index=0, text="t" * n, logprobs=logprobs, finish_reason="length", prompt_logprobs=prompt
    )
    response = CompletionResponse(
        id="cmpl-1", created=1, model="tiny", choices=[choice],
        usage=CompletionUsage(prompt_tokens=n, completion_tokens=0, total_tokens=n),
    )  # fmt: skip
    cut = list(pieces(response))
    assert json.loads(b"".join(cut)) == json.loads(response.model_dump_json())
    assert max(len(piece) for piece in cut) < len(b"".join(cut)) / 10
    assert json_data(response) == response.model_dump(mode="json")
    mapping = {"head": "x", "choices": [choice]}  # a streamed chunk: models in a dict
    assert json.loads(encode(mapping)) == json.loads(
        json.dumps({"head": "x", "choices": [choice.model_dump(mode="json")]})
    )


def test_weight_counts_values_up_to_its_cap() -> None:
    """Every field, item and entry counts; past the cap the count stops, so a large
    answer is known large after about a piece's worth of steps."""
    assert weight(TopToken(id=1, text="a", logprob=-1.0)) == 4
    assert weight([1, 2, 3]) == 4
    assert weight({"a": [1, 2], "b": 3}) == 1 + 3 + 1
    tokens = [_token(i, 4) for i in range(100)]
    assert weight(tokens[1]) > weight(tokens[0])  # the first token has no alternatives
    exact = weight(tokens, cap=10**6)
    assert exact == 1 + weight(tokens[0]) + 99 * weight(tokens[1])
    assert weight(tokens, cap=100) == 101


def test_one_heavy_item_among_light_ones_is_cut() -> None:
    """Seventeen one-token results and one of 20,000 tokens: the heavy one is found (no
    sampling that could miss it) and cut, the answer is not one piece."""
    results = [_result(2, 0) for _ in range(17)]
    results[1] = _result(20_000, 3)
    response = _response(*results)
    assert weight(response) > PIECE
    cut = list(pieces(response))
    assert json.loads(b"".join(cut)) == json.loads(response.model_dump_json())
    assert max(len(piece) for piece in cut) < len(b"".join(cut)) / 10


class _Renamed(BaseModel):
    """Fields pydantic does not write as their value's own JSON."""

    model_config = ConfigDict(populate_by_name=True)

    shown: list[int] = Field(alias="aliased")
    hidden: list[int] = Field(default_factory=list, exclude=True)
    doubled: list[int] = Field(default_factory=list)
    plain: list[int] = []

    @field_serializer("doubled")
    def _double(self, value: list[int]) -> list[int]:
        return [2 * v for v in value]


def test_fields_with_their_own_serialization_are_not_cut() -> None:
    many = list(range(3 * PIECE))
    model = _Renamed(aliased=many, hidden=many, doubled=many, plain=many)
    assert json.loads(encode(model)) == json.loads(model.model_dump_json())
    assert json_data(model) == model.model_dump(mode="json")
    assert len(list(pieces(model))) > 3  # ``plain`` still is
