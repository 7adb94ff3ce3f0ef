"""The served numbers agree with plain transformers on the embedded default (float32)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import httpx
import pytest
from corpus import CHATS, ENGLISH, GIBBERISH, OTHER
from reference import chat_ppl, text_entropies, text_ppl
from tolerances import BATCH_INVARIANCE_REL, TRANSFORMERS_PPL_REL

pytestmark = pytest.mark.integration

ALL_TEXTS = ENGLISH + OTHER + GIBBERISH


def score_texts(http: httpx.Client, texts: list[str], **options: Any) -> dict[str, Any]:
    response = http.post("/v1/score/text", json={"texts": texts, **options})
    assert response.status_code == 200, response.text
    return response.json()


def test_text_ppl_matches_transformers(http: httpx.Client, reference: Any) -> None:
    body = score_texts(http, ALL_TEXTS)
    for text, result in zip(ALL_TEXTS, body["results"], strict=True):
        ppl, count = text_ppl(reference, text)
        assert result["num_scored_tokens"] == count
        assert result["num_tokens"] == count + 1
        assert math.isclose(result["ppl"], ppl, rel_tol=TRANSFORMERS_PPL_REL), text


def test_known_values_on_the_embedded_model(http: httpx.Client) -> None:
    """Pins the embedded model itself. The transformers reference above loads the same
    dequantized GGUF cache as the server, so a change in how the GGUF is read (or in the
    weights shipped) would move both together unseen; these PPLs were measured once with
    plain transformers in float32, and the tolerances leave room for any CPU's rounding
    (float32 agrees to 1e-3 across layouts and machines; 2e-3 and 5e-3 here)."""
    body = score_texts(http, [ENGLISH[3], GIBBERISH[0]])
    france, mash = body["results"]
    assert france["num_scored_tokens"] == 19
    assert math.isclose(france["ppl"], 7.497, rel_tol=2e-3)
    assert math.isclose(mash["ppl"], 635.0, rel_tol=5e-3)


def test_gibberish_scores_worse_than_prose(http: httpx.Client) -> None:
    body = score_texts(http, ENGLISH + GIBBERISH)
    bpc = [r["bits_per_char"] for r in body["results"]]
    assert max(bpc[: len(ENGLISH)]) < min(bpc[len(ENGLISH) :])


@pytest.mark.parametrize("index", range(len(CHATS)))
def test_chat_assistant_only_ppl_matches_transformers(
    http: httpx.Client, reference: Any, index: int
) -> None:
    messages = CHATS[index]
    response = http.post("/v1/score/chat", json={"conversations": [messages]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    ppl, count = chat_ppl(reference, messages)
    assert result["num_scored_tokens"] == count
    assert math.isclose(result["ppl"], ppl, rel_tol=TRANSFORMERS_PPL_REL)
    assistant = [m for m in result["messages"] if m["role"] == "assistant"]
    assert all(m["scored"] for m in assistant)
    assert sum(m["num_scored_tokens"] for m in assistant) == count


def test_token_detail_is_consistent(http: httpx.Client) -> None:
    texts = [ENGLISH[0], OTHER[2]]
    body = score_texts(http, texts, return_tokens=True, top_k=5)
    for text, result in zip(texts, body["results"], strict=True):
        tokens = result["tokens"]
        assert len(tokens) == result["num_tokens"]
        assert tokens[0]["logprob"] is None and tokens[0]["rank"] is None
        assert tokens[0]["top"] is None
        assert "".join(t["text"] for t in tokens) == text
        assert tokens[0]["start"] == 0 and tokens[-1]["end"] == len(text)
        for before, after in itertools.pairwise(tokens):
            assert before["end"] == after["start"]
        scored = tokens[1:]
        assert math.isclose(
            sum(t["logprob"] for t in scored), result["sum_logprob"], rel_tol=1e-6, abs_tol=1e-4
        )
        for token in scored:
            top = token["top"]
            assert len(top) == 5
            assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
            assert token["logprob"] <= top[0]["logprob"] + 1e-6
            if token["rank"] == 1:
                assert top[0]["id"] == token["id"]
                assert top[0]["logprob"] == token["logprob"]
            elif token["rank"] <= 5:
                assert top[token["rank"] - 1]["id"] == token["id"]
            else:
                assert token["id"] not in {t["id"] for t in top}


def test_scores_do_not_depend_on_request_company(http: httpx.Client) -> None:
    alone = [score_texts(http, [t])["results"][0]["sum_logprob"] for t in ALL_TEXTS[:4]]
    together = [r["sum_logprob"] for r in score_texts(http, ALL_TEXTS)["results"][:4]]
    for a, b in zip(alone, together, strict=True):
        assert math.isclose(a, b, rel_tol=BATCH_INVARIANCE_REL)


def test_bits_per_char_ranks_russian_as_unusual(http: httpx.Client) -> None:
    body = score_texts(http, [ENGLISH[0], OTHER[0]])
    english, russian = body["results"]
    assert russian["bits_per_char"] > english["bits_per_char"]
    assert russian["bits_per_byte"] < russian["bits_per_char"]


def test_entropy_and_min_k_match_transformers(http: httpx.Client, reference: Any) -> None:
    """Entropy, Min-K% and Min-K%++ on the embedded model equal a plain float32
    transformers forward (the full distribution in float64 from its logits)."""
    body = score_texts(http, ALL_TEXTS, return_entropy=True, min_k=True, min_k_percent=20)
    for text, result in zip(ALL_TEXTS, body["results"], strict=True):
        logprobs, entropy, std = text_entropies(reference, text)
        mean_entropy = math.fsum(entropy) / len(entropy)
        assert math.isclose(result["mean_entropy"], mean_entropy, rel_tol=TRANSFORMERS_PPL_REL)
        count = max(1, int(len(logprobs) * 0.2))
        min_k = math.fsum(sorted(logprobs)[:count]) / count
        z = sorted((lp + h) / s for lp, h, s in zip(logprobs, entropy, std, strict=True))
        assert math.isclose(result["min_k_logprob"], min_k, rel_tol=TRANSFORMERS_PPL_REL)
        assert math.isclose(
            result["min_k_plus_plus"], math.fsum(z[:count]) / count, rel_tol=TRANSFORMERS_PPL_REL
        ), text


def test_words_tile_every_script_on_the_embedded_model(http: httpx.Client) -> None:
    texts = [
        "The quick brown fox, it said, jumps over the lazy dog.",
        "Grüße aus München: Straße, Äpfel & Öl!",
        "Привет, мир — как дела?",
        "我们今天去北京。日本語のテキスト",
        "hi 😀🚀 party 🎉! 👍🏽 ok",
    ]
    body = score_texts(http, texts, words=True, return_tokens=True)
    for text, result in zip(texts, body["results"], strict=True):
        words = result["words"]
        assert "".join(w["text"] for w in words) == text
        assert [w["start"] for w in words[1:]] == [w["end"] for w in words[:-1]]
        assert sum(w["num_tokens"] for w in words) == result["num_tokens"]
        tokens = iter(result["tokens"])
        for w in words:  # a word's logprob is the sum of its tokens' (null if one has none)
            lps = [next(tokens)["logprob"] for _ in range(w["num_tokens"])]
            if None in lps:
                assert w["logprob"] is None
                continue
            assert math.isclose(w["logprob"], math.fsum(lps), rel_tol=1e-6, abs_tol=1e-6)
            if w["logprob_corrected"] is not None:
                assert w["surprisal_bits"] >= 0
