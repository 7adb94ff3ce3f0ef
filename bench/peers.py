"""The peers the server is compared with, on the same token ids, run after the server stops.

- naive: the hand-rolled transformers loop the server replaces: one text per forward,
  ``model(input_ids, labels=input_ids)``, in the server's dtype, after a warm-up.
- vllm: offline vLLM ``prompt_logprobs`` in its own venv (.venv-vllm), as a subprocess
  running bench/vllm_peer.py (vLLM and the server's torch do not share one environment),
  in vLLM's default mode: on CPU that compiles the model (torch.compile) at start-up.
- vllm-eager: the same with ``enforce_eager=True`` (no compile; slower here, see NOTES).

Throughput is in tokens/s of the texts' token ids; per-text times in ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from stats import mean_nll, percentile, rate

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
VLLM_SCRIPT = ROOT / "bench" / "vllm_peer.py"
VLLM_MISSING = "vLLM peer skipped: run `make install-vllm`"
MIXED = "bf16-mixed"  # the server's float32 weights + bfloat16 autocast


def model_dir(source: str = "default") -> Path:
    """The HF directory the server loads for ``--model SOURCE`` (``default``: the embedded
    model, its GGUF dequantized), parsed as the server parses it (``SOURCE?dtype=...``
    options included)."""
    from service.models import parse_model_args, resolve
    from service.settings import Settings

    (spec,) = parse_model_args([f"default={source}"])
    return resolve(spec, Settings().cache_dir).path


def _device_and_dtype_pickers() -> tuple[Any, Any]:
    """(pick_device, pick_dtype) of the checkout being measured (older ones kept them in
    the transformers backend's module)."""
    try:
        from service.backends.precision import pick_device, pick_dtype
    except ImportError:  # before the precision module existed
        from service.backends.hf import pick_device, pick_dtype
    return pick_device, pick_dtype


def default_dtype(requested: str, device: str = "auto") -> str:
    """The dtype name ``lmscore serve --dtype REQUESTED --device DEVICE`` picks here."""
    pick_device, pick_dtype = _device_and_dtype_pickers()
    if requested == MIXED:
        return MIXED
    return str(pick_dtype(requested, pick_device(device))).removeprefix("torch.")


def torch_precision(dtype: str) -> tuple[Any, Any]:
    """(weights dtype, autocast dtype or None) as torch dtypes for a server dtype name."""
    import torch

    if dtype == MIXED:
        return torch.float32, torch.bfloat16
    return getattr(torch, dtype), None


def tokenize(path: Path, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as the model's tokenizer makes them (no special tokens added)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return [list(tokenizer(text).input_ids) for text in texts]


def _naive_corpus(model: Any, corpus: list[list[int]]) -> dict[str, Any]:
    """Time one forward per text (after a warm-up on the first); seconds, tok/s, ms per text.
    ``float(loss)`` waits for the device, so each time holds the whole forward."""
    import torch

    tensors = [torch.tensor([ids], device=model.device) for ids in corpus]
    model(input_ids=tensors[0], labels=tensors[0])  # warm-up
    per_text: list[float] = []
    nll_sum = 0.0
    for ids in tensors:
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        per_text.append(time.perf_counter() - started)
        nll_sum += float(loss) * (ids.shape[1] - 1)
    seconds = sum(per_text)
    tokens = sum(len(ids) for ids in corpus)
    return {
        "texts": len(corpus),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": rate(tokens, seconds),
        "per_text_p50_ms": 1000 * percentile(per_text, 50),
        "per_text_p95_ms": 1000 * percentile(per_text, 95),
        "mean_nll": mean_nll(-nll_sum, sum(len(ids) - 1 for ids in corpus)),
    }


def naive_peer(
    path: Path, dtype: str, corpora: dict[str, list[list[int]]], device: str = "auto"
) -> dict[str, Any]:
    """The naive loop over each corpus (``short``, ``docs``) in the server's ``dtype`` name,
    on the device ``lmscore serve --device DEVICE`` takes."""
    import torch
    from transformers import AutoModelForCausalLM

    weights, autocast = torch_precision(dtype)
    where = _device_and_dtype_pickers()[0](device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights).to(where).eval()
    mixed = torch.autocast(where.type, dtype=autocast or torch.bfloat16, enabled=bool(autocast))
    with torch.inference_mode(), mixed:
        results = {name: _naive_corpus(model, corpus) for name, corpus in corpora.items()}
    del model
    if where.type == "cuda":  # the vLLM peer's subprocess comes next and needs the memory
        torch.cuda.empty_cache()
    return {"dtype": dtype, "device": str(where), **results}


def vllm_command(
    path: Path,
    dtype: str,
    corpora: dict[str, list[list[int]]],
    prompts: Path,
    enforce_eager: bool = False,
) -> list[str]:
    """The command line of the vLLM peer's subprocess: a context of at least 1024 tokens
    and a power of two above the longest text; vLLM's default mode unless ``enforce_eager``."""
    longest = max(len(ids) for corpus in corpora.values() for ids in corpus)
    return [
        str(VLLM_PYTHON),
        str(VLLM_SCRIPT),
        "--model",
        str(path),
        "--dtype",
        "bfloat16" if dtype == MIXED else dtype,  # vLLM has no mixed mode: the closest
        "--prompts",
        str(prompts),
        "--max-model-len",
        str(max(1024, 1 << longest.bit_length())),
        *(["--enforce-eager"] if enforce_eager else []),
    ]


def vllm_peer(
    path: Path,
    dtype: str,
    corpora: dict[str, list[list[int]]],
    out_dir: Path,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """Offline vLLM over each corpus in a subprocess of .venv-vllm, in its default
    (compiled) mode or with ``enforce_eager``; ``{"skipped": why}`` if it cannot run."""
    if not VLLM_PYTHON.exists():
        return {"skipped": VLLM_MISSING}
    prompts = out_dir / "vllm-prompts.json"
    prompts.write_text(json.dumps(corpora))
    log = out_dir / ("vllm-eager-peer.log" if enforce_eager else "vllm-peer.log")
    command = vllm_command(path, dtype, corpora, prompts, enforce_eager)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4")}
    mode = "eager" if enforce_eager else "default mode, compiled"
    print(f"vLLM peer ({mode}): running in .venv-vllm (log: {log})", flush=True)
    with log.open("w") as handle:
        done = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=1800, check=False
        )
    result = _last_json_line(log.read_text())
    if result is None:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        return {"skipped": f"vLLM peer failed (exit {done.returncode}, see {log}):\n{tail}"}
    if done.returncode != 0:
        # The result line is printed once every corpus is scored; vLLM's engine process can
        # still abort while shutting down (SIGABRT at exit), which does not touch the figures.
        print(f"vLLM peer: exit {done.returncode} after its result (see {log})", flush=True)
        result["exit_after_result"] = done.returncode
    return result


def _last_json_line(output: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object with a ``peer`` key (the script's result)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and "peer" in parsed:
                return parsed
    return None
