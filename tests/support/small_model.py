"""A small random model with the embedded model's tokenizer and chat template.

Same vocabulary, tokenizer and template as the embedded SmolLM2 (so requests take the real
tokenisation and chat paths), but two narrow layers with random weights: a forward pass
costs little, so runs about the serving stack (the soak) fit CI time on two cores. Built
once per directory from the embedded model's dequantized cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json", "generation_config.json")  # fmt: skip


def small_model_dir(target: Path) -> Path:
    """``target`` holding the small model (built on first use)."""
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from service.models import ModelSpec, resolve
    from service.settings import Settings

    source = resolve(ModelSpec("default", "default"), Settings().cache_dir).path
    full = AutoConfig.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=full.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=full.max_position_embeddings,
        bos_token_id=full.bos_token_id,
        eos_token_id=full.eos_token_id,
        pad_token_id=getattr(full, "pad_token_id", None),
        tie_word_embeddings=True,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    LlamaForCausalLM(config).save_pretrained(partial)
    for name in TOKENIZER_FILES:
        if (Path(source) / name).exists():
            shutil.copy2(Path(source) / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
