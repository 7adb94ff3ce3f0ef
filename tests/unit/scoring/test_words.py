"""Word grouping tiles the text in every script; word logprobs by the two estimators."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.scoring.words import Word, group_tokens, segments, word_logprobs

TEXTS = {
    "english": 'The quick brown fox, it said, "jumps" over the lazy dog.\n',
    "german": "  Grüße aus München: Straße, Äpfel & Öl!",
    "russian": "Привет, мир — как дела?",
    "chinese": "我们今天去北京。日本語のテキスト",
    "emoji": "hi 😀🚀 party 🎉! 👍🏽 ok",
    "spaces": " a  b\t\tc \n",
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_segments_tile_the_text(name: str) -> None:
    text = TEXTS[name]
    spans = segments(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert "".join(text[s:e] for s, e in spans) == text
    assert all(text[s:e].strip() for s, e in spans)  # no word is whitespace only


def test_words_keep_punctuation_and_split_cjk_characters() -> None:
    words = [TEXTS["english"][s:e] for s, e in segments(TEXTS["english"])]
    assert words[:5] == ["The", " quick", " brown", " fox,", " it"]
    assert words[-1] == " dog.\n"
    assert [TEXTS["chinese"][s:e] for s, e in segments(TEXTS["chinese"])][:3] == ["我", "们", "今"]


def test_a_cut_inside_a_token_merges_the_words() -> None:
    text = "ab cd ef"
    # Tokens: "ab", " c", "d e", "f": the cut before " ef" is inside the token "d e".
    offsets = [(0, 2), (2, 4), (4, 7), (7, 8)]
    words = group_tokens(text, offsets)
    assert [(w.start, w.end, w.first_token, w.end_token) for w in words] == [
        (0, 2, 0, 1),
        (2, 8, 1, 4),
    ]


def test_word_logprobs_plain_and_corrected() -> None:
    words = [Word(0, 3, 0, 1, True), Word(3, 9, 1, 3, True), Word(9, 10, 3, 4, False)]
    logprobs = np.array([np.nan, -1.0, -2.0, -0.5])  # token 0 has no context
    bow = np.log(np.array([0.5, 0.6, 0.7, 0.8, 0.9]))  # one longer: after the last token
    plain0, word1, word2 = word_logprobs(words, logprobs, bow, shift=0)
    assert plain0.plain is None and plain0.corrected is None
    assert word1.plain == pytest.approx(-3.0)
    # The next word does not start after a space: no correction defined.
    assert word1.corrected is None and word2.corrected is None
    words[2] = Word(9, 10, 3, 4, True)
    _, word1, word2 = word_logprobs(words, logprobs, bow, shift=0)
    assert word1.corrected == pytest.approx(-3.0 + math.log(0.8) - math.log(0.6))
    assert word2.corrected == pytest.approx(-0.5 + math.log(0.9) - math.log(0.8))
    assert word_logprobs(words, logprobs, None, shift=0)[1].corrected is None
