"""The plain transformers computation the service must agree with (float32, no batching)."""

from __future__ import annotations

import math
from typing import Any

import torch


@torch.inference_mode()
def masked_nll(model: Any, ids: list[int], scored: list[bool]) -> tuple[float, int]:
    """(total NLL in nats, scored count) with labels = input ids, unscored labels masked."""
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, ~torch.tensor(scored)] = -100
    out = model(input_ids=input_ids, labels=labels)
    count = int((labels[0, 1:] != -100).sum())
    return float(out.loss) * count, count


def text_ppl(reference: Any, text: str) -> tuple[float, int]:
    """(PPL, scored tokens) of a text: every token after the first."""
    tokenizer, model = reference
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    nll, count = masked_nll(model, ids, [True] * len(ids))
    return math.exp(nll / count), count


def chat_ppl(reference: Any, messages: list[dict[str, str]]) -> tuple[float, int]:
    """Assistant-only PPL: the content tokens of assistant messages, found by rendering prefixes."""
    tokenizer, model = reference

    def tokens(msgs: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=generation_prompt
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    full = tokens(messages, False)
    scored = [False] * len(full)
    end_of_turn = len(tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"])
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokens(messages[:i], True))
        stop = len(tokens(messages[: i + 1], False)) - end_of_turn
        for p in range(start, stop):
            scored[p] = True
    nll, count = masked_nll(model, full, scored)
    return math.exp(nll / count), count


def load_reference() -> tuple[Any, Any]:
    """The embedded model loaded by plain transformers in float32 (from the same cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.models import ModelSpec, resolve
    from service.settings import Settings

    resolved = resolve(ModelSpec("default", "default"), Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    return tokenizer, model


@torch.inference_mode()
def text_entropies(reference: Any, text: str) -> tuple[list[float], list[float], list[float]]:
    """Per scored position (every token after the first): the token's logprob, the entropy
    of the distribution it was drawn from, and the deviation of log p under it (nats)."""
    tokenizer, model = reference
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).sum(-1)
    std = (probs * (log_probs + entropy[:, None]).square()).sum(-1).sqrt()
    token_lp = log_probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return token_lp.tolist(), entropy.tolist(), std.tolist()
