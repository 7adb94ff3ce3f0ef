"""torch's flash-attention varlen kernel (CUDA, half precision) as this project drives it:
its signature has changed between torch releases, so what it takes is read, not assumed."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class VarlenKernel:
    """torch's ``varlen_attn`` and what its signature takes, which has changed between
    torch releases: causality as ``is_causal`` or as ``window_size=(-1, 0)``; a ``scale``
    or only 1/sqrt(head size); grouped heads (``enable_gqa``) or equal head counts only."""

    kernel: Any
    takes_scale: bool
    takes_window: bool
    takes_gqa: bool

    @classmethod
    def of(cls, kernel: Any) -> VarlenKernel | None:
        """The kernel with its signature read, or None for one this module cannot drive."""
        accepted = inspect.signature(kernel).parameters.keys()
        if not {"window_size", "is_causal"} & accepted:
            return None
        return cls(
            kernel,
            takes_scale="scale" in accepted,
            takes_window="window_size" in accepted,
            takes_gqa="enable_gqa" in accepted,
        )

    def takes(self, query: torch.Tensor, sliding: int | None, scaling: float | None) -> bool:
        """No sliding window, and a scale this kernel can be given (a kernel without
        ``scale`` applies 1/sqrt(head size) only)."""
        usual = query.shape[-1] ** -0.5
        return sliding is None and (
            self.takes_scale or scaling is None or math.isclose(scaling, usual, rel_tol=1e-6)
        )


def find_varlen() -> VarlenKernel | None:
    """torch's ``varlen_attn`` where this torch has one this module can drive, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # pragma: no cover - older torch
        return None
    return VarlenKernel.of(varlen_attn)
