"""A model's decoder layers compiled by ``torch.compile`` (inductor), attention left eager.

On CPU a bf16 forward of short texts spends over a third of its time in elementwise steps:
RMSNorm's float32 round trip, rotary embeddings, SiLU-and-mul, residual adds. Each is a
separate pass over memory and a separate OpenMP region. Inductor fuses them into a few C++
loops; the matmuls stay oneDNN's. Ragged attention is registered under
``torch.compiler.disable`` (see ``ragged.register``), so it splits each layer into two
graphs whose shapes depend only on the token count: batches of any composition reuse them,
where a traced per-window attention recompiles whenever the window count changes.

Compiling needs a C++ compiler on CPU. Where it fails (none installed, an inductor bug),
the layers go back to eager for good and a warning says why: scores never depend on it.
Compiled float32 equals eager within the contract's tolerance (tests/unit/backends/
test_compiled.py); measured speed and bf16 error are in bench/NOTES.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

CHOICES = ("off", "on", "auto")
COMPILERS = ("g++", "c++", "clang++")


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would find ($CXX, else g++, c++ or clang++), or None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(COMPILERS)
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def compile_refusal(requested: str, device: torch.device, ragged: bool) -> str | None:
    """Why a model's layers are not compiled, or None when they are. ``auto`` compiles on
    CPU where a C++ compiler is installed: the speed-up is measured there; CUDA is not."""
    if requested not in CHOICES:
        raise ValueError(f"compile must be one of {CHOICES}, not {requested!r}")
    if requested == "off":
        return "compile is off"
    if not ragged:
        # Padded batches trace the model's own attention, which recompiles per shape.
        return "only ragged batches are compiled"
    if requested == "auto" and device.type != "cpu":
        return "'auto' compiles on CPU only; --compile on compiles here"
    if device.type == "cpu" and cpp_compiler() is None:
        return "no C++ compiler for inductor ($CXX, g++, c++ or clang++)"
    return None


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The model's repeated blocks: modules of the classes it names in
    ``_no_split_modules`` (transformers' list of blocks it must not split)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


class CompiledLayers:
    """Compiled forwards installed on ``layers``. A call that fails compiled and then
    succeeds eagerly was compile's failure: every layer goes back to eager for good and
    ``active`` turns False. A call that fails eagerly too raises the eager error (the
    model's own: out of memory, bad input), and the layers stay compiled. ``on_fallback``
    is called once the layers have gone back to eager."""

    def __init__(
        self, layers: list[torch.nn.Module], on_fallback: Callable[[], None] | None = None
    ) -> None:
        if not layers:
            raise ValueError("no decoder layers to compile")
        self.layers = layers
        self._on_fallback = on_fallback
        self.active = True
        self.failure: str | None = None
        for layer in layers:
            eager = layer.forward
            compiled = torch.compile(eager, dynamic=True)
            layer.forward = self._guarded(eager, compiled)

    def _guarded(self, eager: Callable[..., Any], compiled: Callable[..., Any]) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return eager(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:
                out = eager(*args, **kwargs)
                self.fall_back(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                return out

        return forward

    def fall_back(self, reason: str) -> None:
        """Put every layer's eager forward back (the class's own) and say why."""
        if not self.active:
            return
        self.active = False
        self.failure = reason
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
        log.warning("compiling the decoder layers failed, running them eagerly: %s", reason)
        if self._on_fallback is not None:
            self._on_fallback()
