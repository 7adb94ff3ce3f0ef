"""Bits per byte and per character with a SentencePiece-style tokenizer (Llama 2, Mistral,
Gemma): characters outside the vocabulary fall back to ``<0xNN>`` byte tokens, a space is
``▁``, and with a dummy prefix the tokenizer puts a ``▁`` before the text.

A character split across byte tokens at the start of a text (its first pieces unscored)
counts only the bytes of its scored pieces, and the dummy prefix counts as no byte of the
text. The reference reads the tokens independently of the service."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from tiny_engines import make_engine

from service.engine import Engine
from service.schemas import ContinuationRequest, TextScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

LN2 = math.log(2.0)
WORDS = [
    "the",
    "model",
    "scores",
    "every",
    "token",
    "hello",
    "world",
    "assistant",
    "user",
    "system",
    "text",
]
TEXTS = ["😀 hello 日本 world", "日本語 text", "Ωμέγα", "hello 😀", " spaced 😀"]


def _tokenizer(dummy_prefix: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    steps = [normalizers.Prepend("▁")] if dummy_prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    strip = [decoders.Strip(" ", 1, 0)] if dummy_prefix else []
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    specials = ["<unk>", "<s>", "</s>"]
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    )
    # The 256 byte tokens are ordinary vocabulary entries, as in Llama 2's tokenizer.json.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


def _build(target: Path, dummy_prefix: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer(dummy_prefix)
    tokenizer.save_pretrained(target)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        initializer_range=0.3, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    return target


@pytest_asyncio.fixture(loop_scope="session", params=[True, False], ids=["prefix", "no-prefix"])
async def sp_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Engine, Any]]:
    from transformers import AutoTokenizer

    path = _build(tmp_path_factory.mktemp("sentencepiece"), request.param)
    engine = make_engine(path)
    yield engine, AutoTokenizer.from_pretrained(path)
    await engine.close()


def _pieces(tokenizer: Any, ids: list[int], text: str) -> tuple[list[bytes], bool]:
    """Each token's bytes of ``text`` (a leading dummy ``▁`` holds none), and whether the
    tokenizer added that dummy."""
    pieces = []
    for token in tokenizer.convert_ids_to_tokens(ids):
        is_byte = token.startswith("<0x") and len(token) == 6
        pieces.append(bytes([int(token[3:5], 16)]) if is_byte else token.replace("▁", " ").encode())
    if b"".join(pieces) == text.encode():
        return pieces, False
    assert pieces[0].startswith(b" ") and b"".join(pieces)[1:] == text.encode()
    return [pieces[0][1:], *pieces[1:]], True


@pytest.mark.parametrize("prepend_bos", [False, True])
async def test_bits_per_byte_count_only_the_scored_bytes(
    sp_engine: tuple[Engine, Any], prepend_bos: bool
) -> None:
    engine, tokenizer = sp_engine
    response = await engine.score_text(TextScoreRequest(texts=TEXTS, prepend_bos=prepend_bos))
    exercised = 0  # texts whose scored bytes differ from their scored characters' bytes
    for text, result in zip(TEXTS, response.response.results, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces, dummy = _pieces(tokenizer, ids, text)
        scored = range(0 if prepend_bos else 1, len(ids))
        ends = list(itertools.accumulate(len(p) for p in pieces))
        first = ends[scored.start] - len(pieces[scored.start])
        char_ends = itertools.accumulate(len(c.encode()) for c in text)
        chars = sum(1 for end in char_ends if first < end <= ends[-1])
        nbytes = sum(len(pieces[j]) for j in scored)
        exercised += dummy or first not in {0, *itertools.accumulate(len(c.encode()) for c in text)}
        bits = -result.sum_logprob / LN2
        assert result.num_scored_tokens == len(scored)
        assert result.bits_per_byte == pytest.approx(bits / nbytes, rel=1e-12), text
        assert result.bits_per_char == pytest.approx(bits / chars, rel=1e-12), text
    if not prepend_bos:  # with BOS and no dummy prefix every byte is scored
        assert exercised >= 2, "no split character or dummy prefix: the check did not run"


async def test_alternatives_keep_the_space_their_piece_starts_with(
    sp_engine: tuple[Engine, Any],
) -> None:
    """A top-k alternative's text is what the token adds after text: a word-initial "▁"
    piece is " word" even where the tokenizer's decoder strips it from a lone decoding."""
    engine, tokenizer = sp_engine
    request = TextScoreRequest(texts=["hello world the model"], return_tokens=True, top_k=20)
    (result,) = (await engine.score_text(request)).response.results
    anchor = tokenizer("hello", add_special_tokens=False)["input_ids"]
    before = tokenizer.decode(anchor)
    spaced = 0
    assert result.tokens is not None
    for token in result.tokens:
        for alternative in token.top or []:
            piece = tokenizer.convert_ids_to_tokens(alternative.id)
            if piece.startswith("<"):  # byte and special tokens
                continue
            after = tokenizer.decode([*anchor, alternative.id])
            assert alternative.text == after[len(before) :], piece
            spaced += piece.startswith("▁")
    assert spaced > 0, "no word-initial alternative: the check did not run"


async def test_a_continuation_alone_scores_no_dummy_prefix(sp_engine: tuple[Engine, Any]) -> None:
    """Tokenized alone (an empty context, or one merging with it), a continuation that a
    dummy-prefix tokenizer starts with a bare "▁" (before a newline or a byte) does not
    get that space scored: it is not in the text."""
    engine, tokenizer = sp_engine
    continuations = ["\nline", "日本語", "hello world"]
    request = ContinuationRequest(context="", continuations=continuations, return_tokens=True)
    response = (await engine.score_continuations(request)).response
    for sent, result in zip(continuations, response.results, strict=True):
        assert result.tokens is not None
        assert "".join(t.text for t in result.tokens) == sent
        pieces = tokenizer.convert_ids_to_tokens([t.id for t in result.tokens])
        assert pieces[0] != "▁"


async def test_continuations_take_the_bos_a_tokenizer_adds_by_default(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A tokenizer that puts <s> before every text (Llama's, Gemma's) gets it before the
    context unless the request says prepend_bos false: lm-evaluation-harness's hf
    backend tokenizes contexts with the tokenizer's defaults."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    path = _build(tmp_path_factory.mktemp("adds-bos"), dummy_prefix=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path)("hello")["input_ids"][0] == bos
    engine = make_engine(path)
    try:
        counts = {}
        for prepend_bos in (None, True, False):
            request = ContinuationRequest(
                context="hello world", continuations=[" text"], prepend_bos=prepend_bos
            )
            response = (await engine.score_continuations(request)).response
            counts[prepend_bos] = (response.context_tokens, response.results[0].sum_logprob)
        assert counts[None] == counts[True]
        assert counts[False][0] == counts[True][0] - 1
        assert counts[False][1] != counts[True][1]
    finally:
        await engine.close()
