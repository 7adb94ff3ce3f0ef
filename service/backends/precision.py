"""Where and in what precision a model runs: device, weight dtype and autocast.

The choices and what they cost in accuracy (measured on the embedded model, 40 English
texts; the README's Precision section): ``float32`` is exact to the contract; ``bfloat16``
(bf16 weights and activations) moves per-text PPL by median 1.2%, up to 15% on a 10-token
text; ``bf16-mixed`` (float32 weights and residual stream, bf16 matmuls under autocast)
about halves that (median 0.6%, max 6.1%). Log-softmax is float32 whatever the choice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIXED = "bf16-mixed"
CHOICES = ("auto", "float32", "bfloat16", "float16", MIXED)


def pick_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but CUDA is not available")
    return torch.device(requested)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16 (where bf16 matmuls beat float32)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The weights' dtype. ``auto`` -> bfloat16 where it is fast (CUDA with bf16,
    AMX/AVX512-BF16 CPUs), else float32; ``bf16-mixed`` keeps float32 weights."""
    if requested == MIXED:
        return torch.float32
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return (
            torch.bfloat16
            if torch.cuda.is_bf16_supported(including_emulation=False)
            else torch.float16
        )
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else torch.float32


@dataclass(frozen=True)
class Precision:
    """Weights in ``weights``; matmuls under autocast to ``autocast`` when set."""

    name: str
    weights: torch.dtype
    autocast: torch.dtype | None = None

    @classmethod
    def pick(cls, requested: str, device: torch.device) -> Precision:
        weights = pick_dtype(requested, device)
        if requested == MIXED:
            return cls(MIXED, weights, torch.bfloat16)
        return cls(str(weights).removeprefix("torch."), weights)

    @property
    def exact(self) -> bool:
        """float32 throughout: scores held to the contract's tolerances."""
        return self.name == "float32"

    def context(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """Autocast for the forward pass, or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)


def skip_cudnn_attention(device: torch.device) -> None:
    """On CUDA, leave cuDNN's attention out of SDPA: it builds an execution plan for every
    new shape, batches of texts rarely repeat a shape, and the plans made bf16 forward
    passes several times slower (bench/NOTES.md). The switch is process-wide (torch keeps
    one flag); setting it per forward pass would race between models' threads."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def model_context(config: Any) -> int:
    """The model's own context length from its config."""
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 1:
            return value
    return 2048


def largest_difference(before: torch.Tensor, after: torch.Tensor) -> float:
    """Largest absolute difference of two tensors (a probe's logits or hidden states, before
    and after a load-time change), in float32; ``inf`` where their shapes differ."""
    if before.shape != after.shape:
        return float("inf")
    return float((before.float() - after.float()).abs().max())
