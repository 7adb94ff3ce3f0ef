"""The transformers backend on architectures other than Llama: tiny random models of each,
scored ragged (where the model allows it) and padded, against plain transformers in float64.

Each architecture differs from Llama somewhere lmscore has to get right: learned absolute
positions (GPT-2, OPT), sliding windows (Mistral), QK norms (Qwen3), an LM head bias (Phi),
logits scaled (Cohere multiplies, Granite divides) or soft-capped (Gemma 2), attention
scores soft-capped (Gemma 2) or joined by sink logits (gpt-oss), ALiBi with no pluggable
attention (Bloom), mixture-of-experts layers (Mixtral, gpt-oss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tolerances import batch_invariance_atol

from service.backends import logit_head, ragged
from service.backends.base import BatchLayout, ForwardItem
from service.backends.hf import HFBackend
from service.backends.logit_head import LogitTransform

DECODER = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
GRANITE_MULTIPLIERS = dict(
    logits_scaling=4.0, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2
)
GPT = dict(n_embd=32, n_layer=2, n_head=4, n_positions=64)

ARCHITECTURES: dict[str, tuple[dict[str, Any], BatchLayout]] = {
    "gpt2": (GPT, BatchLayout.RAGGED),
    "opt": (
        {**DECODER, "ffn_dim": 64, "word_embed_proj_dim": 32},
        BatchLayout.RAGGED,
    ),
    "gpt_neox": (DECODER, BatchLayout.RAGGED),
    "mistral": ({**DECODER, "sliding_window": 4}, BatchLayout.RAGGED),
    "qwen3": ({**DECODER, "head_dim": 8}, BatchLayout.RAGGED),
    "phi": (DECODER, BatchLayout.RAGGED),
    "cohere": ({**DECODER, "logit_scale": 0.5}, BatchLayout.RAGGED),
    "granite": (
        {**DECODER, **GRANITE_MULTIPLIERS},
        BatchLayout.RAGGED,
    ),
    "gemma2": (
        {
            **DECODER,
            "head_dim": 8,
            "sliding_window": 4,
            "final_logit_softcapping": 5.0,
            "attn_logit_softcapping": 2.0,
        },
        BatchLayout.RAGGED,
    ),
    "gpt_oss": (
        {
            **DECODER,
            "head_dim": 8,
            "sliding_window": 4,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
        },
        BatchLayout.RAGGED,
    ),
    "bloom": (dict(hidden_size=32, n_layer=2, n_head=4), BatchLayout.PADDED),
    "mixtral": ({**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2}, BatchLayout.RAGGED),
}

TEXTS = [
    "a",
    "the model scores every token hello world assistant user system text language " * 2,
    "Grüße 😀 text",
]


def _build(model_type: str, overrides: dict[str, Any], tokenizer_dir: Path, target: Path) -> Path:
    """A tiny random ``model_type`` model with the tiny tokenizer, saved in ``target``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **overrides,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # wide weights: peaked, position-dependent distributions
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.3)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("architectures")
    return {
        name: _build(name, overrides, tiny_model_dir, root / name)
        for name, (overrides, _) in ARCHITECTURES.items()
    }


@torch.inference_mode()
def _float64_reference(path: Path, ids: list[int]) -> np.ndarray:
    """log p(ids[p] | ids[:p]) from plain transformers (float64 where the model's kernels
    take it; grouped mixture-of-experts matmuls only run float32), with the model's own
    eager attention: some transformers releases run Gemma 2 under SDPA, which drops its
    attention soft cap."""
    from transformers import AutoModelForCausalLM

    for dtype in (torch.float64, torch.float32):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation="eager"
        ).eval()
        try:
            logits = model(torch.tensor([ids])).logits[0].double()
        except RuntimeError:
            continue
        rows = torch.log_softmax(logits[:-1], dim=-1)
        return rows.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
    raise AssertionError(f"{path.name}: the reference model did not run")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_scores_like_plain_transformers(
    name: str, model_dirs: dict[str, Path], tokenizer: Any
) -> None:
    """auto (ragged where the model allows it) and padded batches of texts of very
    different lengths both equal the reference, within the contract's float32 tolerance."""
    path, (_, layout) = model_dirs[name], ARCHITECTURES[name]
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in TEXTS]
    ids = [[tokenizer.bos_token_id, *i] for i in ids]
    items = [ForwardItem(tuple(i), 1) for i in ids]
    references = [_float64_reference(path, token_ids) for token_ids in ids]
    auto = HFBackend(path, dtype="float32", device="cpu")
    padded = HFBackend(path, dtype="float32", device="cpu", attention="padded")
    assert auto.layout is layout
    for backend in (auto, padded):
        for got, want in zip(backend.forward(items), references, strict=True):
            assert got.logprobs.shape == want.shape
            assert np.max(np.abs(got.logprobs - want)) <= batch_invariance_atol(want), name


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss"])
def test_written_out_attention_in_query_blocks(
    name: str, model_dirs: dict[str, Path], tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soft-capped and sink attention, one query row per block, equals the reference."""
    monkeypatch.setattr(ragged, "WRITTEN_OUT_SCORES", 1)
    ids = [[tokenizer.bos_token_id, *tokenizer.encode(t, add_special_tokens=False)] for t in TEXTS]
    backend = HFBackend(model_dirs[name], dtype="float32", device="cpu", attention="ragged")
    results = backend.forward([ForwardItem(tuple(i), 1) for i in ids])
    for got, token_ids in zip(results, ids, strict=True):
        want = _float64_reference(model_dirs[name], token_ids)
        assert np.max(np.abs(got.logprobs - want)) <= batch_invariance_atol(want)


def test_an_unknown_logit_transform_is_refused(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose own logits the body + head split does not reproduce is not served."""
    monkeypatch.setattr(logit_head.LogitTransform, "of", classmethod(lambda cls, c: cls()))
    with pytest.raises(RuntimeError, match="transforms its logits in a way lmscore"):
        HFBackend(model_dirs["granite"], dtype="float32", device="cpu")


@pytest.mark.parametrize(
    ("model_type", "settings", "want"),
    [
        ("llama", {}, LogitTransform()),
        ("cohere", {"logit_scale": 0.0625}, LogitTransform(scale=0.0625)),
        ("granite", {"logits_scaling": 8.0}, LogitTransform(scale=0.125)),
        ("granitemoehybrid", {"logits_scaling": 4.0}, LogitTransform(scale=0.25)),
        ("hyperclovax", {"logits_scaling": 2.0}, LogitTransform(scale=2.0)),
        ("falcon_h1", {"lm_head_multiplier": 0.5}, LogitTransform(scale=0.5)),
        ("gemma2", {"final_logit_softcapping": 30.0}, LogitTransform(softcap=30.0)),
        ("gemma3_text", {"final_logit_softcapping": None}, LogitTransform()),
        ("recurrent_gemma", {"logits_soft_cap": 30.0}, LogitTransform(softcap=30.0)),
    ],
)
def test_logit_transform_read_from_config(
    model_type: str, settings: dict[str, Any], want: LogitTransform
) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **settings)
    assert LogitTransform.of(config) == want


def test_a_head_that_matches_passes_and_a_scaled_one_fails() -> None:
    """``check_head`` on a stand-in model: the tolerance scales with the largest logit."""
    seeded = torch.Generator().manual_seed(0)  # the same stand-in whatever ran before
    weight = torch.randn(11, 4, dtype=torch.float32, generator=seeded)
    hidden = torch.randn(5, 4, generator=seeded)

    class Model(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, use_cache: bool) -> Any:
            return type("Out", (), {"logits": (hidden @ weight.T)[None] / 4})()

    ids = torch.zeros(1, 5, dtype=torch.long)
    logit_head.check_head(Model(), ids, hidden, lambda h: h @ weight.T / 4, exact=True)
    with pytest.raises(RuntimeError, match="differs from the model's own logits"):
        logit_head.check_head(Model(), ids, hidden, lambda h: h @ weight.T, exact=True)
    with pytest.raises(RuntimeError, match="shape"):
        logit_head.check_head(Model(), ids, hidden, lambda h: (h @ weight.T)[:, :10], exact=True)
