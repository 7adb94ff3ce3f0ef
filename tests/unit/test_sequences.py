"""Sequences: context fitting, forward items, stitching, text and chat masks."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pytest
from tokenizers import AddedToken

from service.backends.base import ForwardItem, ForwardResult
from service.chat_sequences import chat_error, chat_sequence
from service.errors import InvalidRequest
from service.scoring.chat import ChatTemplateError
from service.scoring.windows import Window
from service.sequences import (
    Encoded,
    RunOptions,
    ScoredSequence,
    encode,
    fit_to_context,
    forward_items,
    stitch,
    text_sequence,
)

BOS = 1


def _seq(n: int, bos_id: int | None = None) -> ScoredSequence:
    text = "".join(chr(ord("a") + i % 26) for i in range(n))
    ids = [100 + i for i in range(n)]
    return text_sequence(text, Encoded(ids, [(i, i + 1) for i in range(n)]), bos_id)


def _fake_forward(item: ForwardItem) -> ForwardResult:
    """Scores that are a function of the scored token id only."""
    ids = np.array(item.input_ids[item.score_from :], dtype=np.int64)
    top = ids[:, None] + np.arange(item.top_k, dtype=np.int64)[None, :]
    return ForwardResult(
        logprobs=(-0.01 * ids).astype(np.float32),
        ranks=ids % 7 + 1,
        top_ids=top,
        top_logprobs=(-0.5 * top).astype(np.float32),
    )


def test_text_sequence_without_bos_skips_first_token() -> None:
    seq = _seq(4)
    assert seq.scored == [False, True, True, True]
    assert seq.input_ids == seq.token_ids
    assert seq.shift == 0
    assert seq.message_index is None and not seq.truncated


def test_text_sequence_with_bos_scores_every_token() -> None:
    seq = _seq(4, bos_id=BOS)
    assert seq.scored == [True] * 4
    assert seq.input_ids == [BOS, 100, 101, 102, 103]
    assert seq.shift == 1


def test_text_sequence_with_bos_id_zero() -> None:
    seq = _seq(2, bos_id=0)
    assert seq.input_ids == [0, 100, 101]
    assert seq.scored == [True, True]


@pytest.mark.parametrize("bos", [None, BOS])
def test_fits_in_one_window(bos: int | None) -> None:
    seq = _seq(8, bos)
    n = len(seq.input_ids)
    for overflow in ("error", "truncate", "sliding_window"):
        assert fit_to_context(seq, n, overflow, None, "texts[0]") == [Window(0, n, 1)]
    assert not seq.truncated


def test_error_overflow_names_param() -> None:
    with pytest.raises(InvalidRequest) as info:
        fit_to_context(_seq(9), 8, "error", None, "texts[3]")
    assert info.value.param == "texts[3]"
    assert "9 tokens" in info.value.message and "8" in info.value.message


@pytest.mark.parametrize("bos", [None, BOS])
def test_truncate_cuts_and_flags(bos: int | None) -> None:
    seq = _seq(20, bos)
    windows = fit_to_context(seq, 8, "truncate", None, "texts[0]")
    assert seq.truncated
    assert len(seq.input_ids) == 8
    assert len(seq.token_ids) == len(seq.offsets) == len(seq.scored) == 8 - seq.shift
    assert seq.token_ids == [100 + i for i in range(8 - seq.shift)]
    assert windows == [Window(0, 8, 1)]


def test_truncate_cuts_message_index() -> None:
    seq = _seq(10)
    owners: list[int | None] = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    seq.message_index = owners
    fit_to_context(seq, 6, "truncate", None, "conversations[0]")
    assert seq.message_index == [0] * 5 + [1]


def test_sliding_window_covers_every_position() -> None:
    seq = _seq(30, BOS)
    windows = fit_to_context(seq, 8, "sliding_window", 3, "texts[0]")
    scored = sorted(p for w in windows for p in range(w.score_from, w.end))
    assert scored == list(range(1, 31))
    assert all(w.end - w.begin <= 8 for w in windows)
    assert not seq.truncated and len(seq.token_ids) == 30


def test_sliding_window_default_stride_is_half_the_context() -> None:
    windows = fit_to_context(_seq(20), 8, "sliding_window", None, "texts[0]")
    assert [w.end for w in windows] == [8, 12, 16, 20]


@pytest.mark.parametrize("stride", [8, 9, 100])
def test_stride_not_below_context_is_rejected(stride: int) -> None:
    with pytest.raises(InvalidRequest) as info:
        fit_to_context(_seq(20), 8, "sliding_window", stride, "texts[0]")
    assert info.value.param == "stride"


def test_empty_sequence_has_no_windows() -> None:
    assert fit_to_context(_seq(0), 8, "error", None, "texts[0]") == []


@pytest.mark.parametrize(
    ("n", "bos", "context", "stride"),
    [(30, None, 8, 3), (30, BOS, 8, 5), (5, None, 8, 2), (2, BOS, 4, 1), (1, None, 4, 2)],
)
@pytest.mark.parametrize("top_k", [0, 2])
def test_forward_items_and_stitch_round_trip(
    n: int, bos: int | None, context: int, stride: int, top_k: int
) -> None:
    seq = _seq(n, bos)
    windows = fit_to_context(seq, context, "sliding_window", stride, "texts[0]")
    options = RunOptions(top_k=top_k, with_ranks=True)
    items = forward_items(seq, windows, options)
    assert all(len(it.input_ids) <= context and it.score_from >= 1 for it in items)
    assert all(it.num_scored >= 1 and it.top_k == top_k for it in items)
    assert sum(it.num_scored for it in items) == len(seq.input_ids) - 1
    scores = stitch(seq, windows, [_fake_forward(it) for it in items], options)
    ids = np.array(seq.input_ids)
    assert np.isnan(scores.logprobs[0]) and scores.ranks[0] == 0
    np.testing.assert_allclose(scores.logprobs[1:], -0.01 * ids[1:], rtol=1e-6, atol=0)
    assert scores.logprobs.dtype == np.float32
    np.testing.assert_array_equal(scores.ranks[1:], ids[1:] % 7 + 1)
    assert scores.top_ids.shape == (len(ids), top_k)
    if top_k:
        np.testing.assert_array_equal(scores.top_ids[1:, 0], ids[1:])
        np.testing.assert_array_equal(scores.top_ids[1:, 1], ids[1:] + 1)
        np.testing.assert_allclose(scores.top_logprobs[1:, 1], -0.5 * (ids[1:] + 1), rtol=1e-6)


def test_forward_items_feed_history_before_scored_tokens() -> None:
    seq = _seq(10)
    windows = [Window(0, 4, 1), Window(2, 6, 4)]
    items = forward_items(seq, windows, RunOptions())
    assert items[1].input_ids == (102, 103, 104, 105)
    assert items[1].score_from == 2


def test_stitch_rejects_missing_results() -> None:
    seq = _seq(10)
    windows = fit_to_context(seq, 4, "sliding_window", 2, "texts[0]")
    items = forward_items(seq, windows, RunOptions())
    with pytest.raises(ValueError):
        stitch(seq, windows, [_fake_forward(it) for it in items[:-1]], RunOptions())


class CharTokenizer:
    """One token per character (id = code point); ChatML chat template."""

    all_special_ids: ClassVar[list[int]] = []  # its ChatML markers are plain characters
    added_tokens_decoder: ClassVar[dict[int, Any]] = {}
    unk_token_id = None

    def __call__(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        assert kwargs == {"add_special_tokens": False, "return_offsets_mapping": True}
        return {
            "input_ids": [[ord(c) for c in t] for t in texts],
            "offset_mapping": [[(i, i + 1) for i in range(len(t))] for t in texts],
        }

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool) -> str:
        assert tokenize is False
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def test_encode_tiles_offsets() -> None:
    (encoded,) = encode(CharTokenizer(), ["héllo"])
    assert encoded.ids == [ord(c) for c in "héllo"]
    assert encoded.offsets == [(i, i + 1) for i in range(5)]
    assert encoded.token_bytes is None  # no character is split: offsets give the bytes


@pytest.mark.parametrize("end_of_turn", [False, True])
def test_chat_sequence_masks(end_of_turn: bool) -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    seq = chat_sequence(CharTokenizer(), msgs, ["assistant"], end_of_turn)
    scored_text = "".join(
        seq.text[s:e] for (s, e), ok in zip(seq.offsets, seq.scored, strict=True) if ok
    )
    assert scored_text == ("yo<|im_end|>" if end_of_turn else "yo")
    assert seq.message_index is not None and seq.bos_id is None
    owners = {
        seq.text[s]: o
        for (s, _), o in zip(seq.offsets, seq.message_index, strict=True)
        if o is not None
    }
    assert owners["h"] == 0 and owners["y"] == 1
    assert seq.message_index[0] is None  # "<" of the first <|im_start|>


def test_chat_sequence_never_scores_the_first_token() -> None:
    class Bare(CharTokenizer):
        def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool) -> str:
            return "".join(m["content"] for m in messages)

    seq = chat_sequence(Bare(), [{"role": "assistant", "content": "abc"}], ["assistant"], False)
    assert seq.scored == [False, True, True]
    assert seq.message_index == [0, 0, 0]


def test_chat_error_param() -> None:
    assert chat_error(ChatTemplateError("bad", 2), 1).param == "conversations[1][2]"
    error = chat_error(ChatTemplateError("bad"), 0)
    assert error.param == "conversations[0]" and error.message == "bad"


def test_next_token_runs_the_last_window_even_when_it_scores_nothing() -> None:
    seq = _seq(1)
    windows = fit_to_context(seq, 8, "error", None, "prompt[0]")
    assert forward_items(seq, windows, RunOptions()) == []
    (item,) = forward_items(seq, windows, RunOptions(top_k=1, next_token=True))
    assert item.next_token and item.num_scored == 0 and item.input_ids == tuple(seq.input_ids)


def test_only_the_last_window_asks_for_the_next_token() -> None:
    seq = _seq(20)
    windows = fit_to_context(seq, 8, "sliding_window", 4, "prompt[0]")
    items = forward_items(seq, windows, RunOptions(top_k=1, next_token=True))
    assert [it.next_token for it in items] == [False] * (len(items) - 1) + [True]


def test_a_control_token_absorbing_contents_whitespace_stays_a_control_token(
    tokenizer: Any,
) -> None:
    """A marker defined with rstrip (Phi-3's ``<|user|>``) takes the spaces after it into its
    offsets; content starting with spaces made it look forged, and it was scored as text."""
    phi_like = copy.deepcopy(tokenizer)
    phi_like.add_special_tokens(
        {"additional_special_tokens": [AddedToken("<|im_start|>", rstrip=True, special=True)]}
    )
    phi_like.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    messages = [{"role": "user", "content": "  indented"}, {"role": "assistant", "content": "ok"}]
    seq = chat_sequence(phi_like, messages, ["assistant"], False)
    rendered = phi_like.apply_chat_template(messages, tokenize=False)
    assert seq.token_ids == phi_like(rendered, add_special_tokens=False)["input_ids"]
    assert seq.token_ids[0] == phi_like.convert_tokens_to_ids("<|im_start|>")
