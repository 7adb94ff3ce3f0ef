"""Shared fixtures: a tiny random Llama with a byte-level BPE tokenizer, built offline.

Everything is made locally (no hub): the tokenizer is trained on generated text with
non-ASCII words, the model is a 2-layer LlamaForCausalLM with a fixed seed. Engines use
float32 on CPU; ``reference_logprobs`` scores the same weights in float64.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import torch
from tiny_engines import asgi_client, make_engine

from service.engine import Engine

CONTEXT = 64
BOS_ID = 1
EOS_ID = 2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WORD_TEXT = (
    "the quick brown fox jumps over a lazy dog while the model scores every token "
    "hello world assistant user system text language perplexity bits per byte char "
    "Grüße aus München café naïve façade Привет мир как дела спасибо хорошо "
    "日本語 テキスト 😀 🚀 🎉 123 4567 89 ! ? , . : ; ( ) - 'quoted' \"double\""
)
WORDS = WORD_TEXT.split()


def _corpus(lines: int = 400) -> Iterator[str]:
    rng = random.Random(1234)
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 16))]
        yield " ".join(words) + rng.choice(["", ".", "\n", "!\n"])


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _build_tokenizer()
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=CONTEXT,
        # Wider than the default 0.02 so the random model has peaked, position-dependent
        # distributions (otherwise every logprob is about -ln(vocab)).
        initializer_range=0.3,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(path)

    loaded = AutoTokenizer.from_pretrained(path)
    assert (loaded.unk_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.pad_token_id == EOS_ID and loaded.chat_template
    enc = loaded(["Grüße 😀"], add_special_tokens=False, return_offsets_mapping=True)
    assert enc["offset_mapping"][0][-1][1] == len("Grüße 😀")
    return path


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def reference_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()


@pytest.fixture(scope="session")
def reference_logprobs(reference_model: Any) -> Callable[[list[int]], np.ndarray]:
    """float64 log-softmax rows [len(ids) - 1, vocab]: row p predicts ids[p + 1]."""

    @torch.inference_mode()
    def run(ids: list[int]) -> np.ndarray:
        logits = reference_model(torch.tensor([ids], dtype=torch.long)).logits[0]
        return torch.log_softmax(logits[:-1], dim=-1).numpy()

    return run


@pytest.fixture(scope="session")
def reference_token_logprobs(
    reference_logprobs: Callable[[list[int]], np.ndarray],
) -> Callable[[list[int]], np.ndarray]:
    """float64 log p(ids[p] | ids[:p]) for p = 1..len(ids)-1 (labels=input_ids style)."""

    def run(ids: list[int]) -> np.ndarray:
        rows = reference_logprobs(ids)
        return rows[np.arange(len(ids) - 1), ids[1:]]

    return run


@pytest_asyncio.fixture(loop_scope="session")
async def engine_factory(tiny_model_dir: Path) -> AsyncIterator[Callable[..., Engine]]:
    """Builds engines with Settings overrides; closes them after the test."""
    engines: list[Engine] = []

    def factory(**overrides: Any) -> Engine:
        engine = make_engine(tiny_model_dir, **overrides)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tiny_engine(tiny_model_dir: Path) -> AsyncIterator[Engine]:
    engine = make_engine(tiny_model_dir)
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(tiny_engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(tiny_engine) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def client_factory(
    engine_factory: Callable[..., Engine],
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """An ASGI client over a fresh engine built with Settings overrides."""
    clients: list[httpx.AsyncClient] = []

    def factory(**overrides: Any) -> httpx.AsyncClient:
        http = asgi_client(engine_factory(**overrides))
        clients.append(http)
        return http

    yield factory
    for http in clients:
        await http.aclose()
