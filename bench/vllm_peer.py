"""Offline vLLM prompt-logprob scoring as a benchmark peer; runs in .venv-vllm.

    .venv-vllm/bin/python bench/vllm_peer.py --model DIR --dtype bfloat16 \
        --prompts PROMPTS.json --max-model-len 1024

PROMPTS.json maps a corpus name to lists of token ids (the ids the naive loop scores).
Loads ``LLM(model=DIR)`` in vLLM's default mode (on CPU it compiles the model with
torch.compile at start-up; ``--enforce-eager`` runs it eagerly), warms up, then times one
``llm.generate`` per corpus with ``SamplingParams(max_tokens=1, prompt_logprobs=0)`` and
prints one JSON line: per corpus tokens, seconds, tokens_per_s (prompt tokens per second)
and mean_nll (nats per scored token). vLLM's engine core starts with spawn, hence the main guard.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def parse_args() -> argparse.Namespace:
    """The command line: model directory, dtype, prompts file, context length in tokens."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a plain HF model directory")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--max-model-len", type=int, default=2048, help="tokens")
    parser.add_argument("--warmup", type=int, default=8, help="prompts per corpus to warm up")
    parser.add_argument(
        "--enforce-eager", action="store_true", help="no torch.compile (vLLM's default compiles)"
    )
    return parser.parse_args()


def score(llm: Any, corpus: list[list[int]]) -> dict[str, Any]:
    """Score every prompt in one ``llm.generate``; wall seconds, prompt tok/s, mean NLL."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in corpus]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    sum_logprob, scored = 0.0, 0
    for ids, output in zip(corpus, outputs, strict=True):
        for position in range(1, len(ids)):
            sum_logprob += output.prompt_logprobs[position][ids[position]].logprob
            scored += 1
    tokens = sum(len(ids) for ids in corpus)
    return {
        "texts": len(corpus),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "mean_nll": -sum_logprob / scored if scored else None,
    }


def main() -> None:
    """Load, warm up, score each corpus, print the JSON result line."""
    args = parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB
    from vllm import LLM

    corpora: dict[str, list[list[int]]] = json.loads(args.prompts.read_text())
    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        max_model_len=args.max_model_len,
        enable_prefix_caching=False,
        seed=0,
    )
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    score(llm, [ids for corpus in corpora.values() for ids in corpus[: args.warmup]])
    warmup_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "peer": "vllm",
        "dtype": args.dtype,
        "enforce_eager": args.enforce_eager,
        "load_s": load_s,
        "warmup_s": warmup_s,
    }
    result.update({name: score(llm, corpus) for name, corpus in corpora.items()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
