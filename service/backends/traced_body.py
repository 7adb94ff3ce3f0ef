"""A model's body traced by TorchScript for ragged CPU passes: one call a pass, no GIL held.

An eager forward pass is thousands of small torch calls, and between any two of them the
Python interpreter holds the GIL. On CPU two lanes run passes side by side and the event
loop serves requests beside them, so whatever one thread runs in Python the others wait
for, and a thread that gives the GIL up for one op may wait a whole switch interval to get
it back. With a thread beside them running Python a third of the time, two eager lanes lost
35% of their tokens per second (2-core Intel Xeon with AMX, bf16, 16 short texts a pass);
traced, they lost 20%, the share of the cores that thread took, and scored 1.18x eager with
nothing beside them (``bench/NOTES.md``, "Packed weights, a traced body, and lanes that
share the queue").

``torch.jit.trace`` records the ops one pass runs. Every input that varies between batches
must therefore be a tensor input: the token ids, the position ids, and the windows' bounds
(``cu_seq_lens``), which attention reads inside a scripted loop
(``scripted_windows.traced_windows``). What the model's Python code decided while it was
traced is fixed, so a model is traced only where nothing it decides depends on the batch:
plain causal attention (no sliding window, soft cap or sinks), rotary embeddings whose
frequencies do not depend on the length, no autocast. A probe of another shape must then
match the eager body (float32: within 1e-4 of the largest hidden value; half precision:
2%), or the body runs eagerly, and the log says why. Token trees always run eagerly.

``torch.jit.trace`` is deprecated in torch 2.13 but works; ``--trace-body off`` turns this
off.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from service.backends import scripted_windows
from service.backends.precision import largest_difference
from service.backends.ragged import RaggedBatch
from service.backends.scripted_windows import Untraceable

log = logging.getLogger(__name__)

# Files whose tensor reads under a trace decide nothing that varies between ragged batches:
# the traced attention reads head counts (fixed per model); torch's functional API checks
# an embedding's padding index against its size; transformers' mask builders compare the
# batch size (always 1 in a stream) and look for packed sequences, but ragged attention
# builds no mask (``ragged._no_mask``).
FIXED_PER_MODEL = (
    Path(scripted_windows.__file__),
    Path(torch.nn.functional.__file__),
    Path("transformers") / "masking_utils.py",
)


def _decides(warning: warnings.WarningMessage) -> bool:
    """Whether a warning is the tracer's, from code that may decide per batch."""
    if not issubclass(warning.category, torch.jit.TracerWarning):
        return False
    where = Path(warning.filename)
    return not any(where == path or where.parts[-2:] == path.parts for path in FIXED_PER_MODEL)


CHOICES = ("auto", "off")
# Rotary embeddings whose frequencies are recomputed from the sequence length at run time:
# a trace would keep the ones of the length it saw.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def tracing_refusal(
    requested: str,
    device: torch.device,
    *,
    ragged: bool,
    compiled: bool,
    autocast: bool,
    config: Any,
) -> str | None:
    """Why a model's body is not traced, or None when it is tried."""
    if requested not in CHOICES:
        raise ValueError(f"trace_body must be one of {CHOICES}, not {requested!r}")
    if requested == "off":
        return "tracing is off"
    if device.type != "cpu":
        return "bodies are traced on CPU only"
    if not ragged:
        return "only ragged batches are traced"
    if compiled:
        return "the layers are compiled"
    if autocast:
        return "autocast (bf16-mixed) is not traced"
    rope = rope_type(config)
    if rope in LENGTH_DEPENDENT_ROPE:
        return f"its rotary embeddings ({rope}) depend on the length"
    return None


def rope_type(config: Any) -> str | None:
    """The rotary embedding type a transformers config names, if any."""
    for name in ("rope_parameters", "rope_scaling"):
        params = getattr(config, name, None)
        if isinstance(params, dict):
            kind = params.get("rope_type") or params.get("type")
            if kind:
                return str(kind)
    return None


class _Body(torch.nn.Module):
    """The body with tensors in and the stream's final hidden states out, as a trace
    takes it."""

    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, cu_seq_lens: torch.Tensor
    ) -> torch.Tensor:
        out = self.body(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden: torch.Tensor = out.last_hidden_state[0]
        return hidden


class TracedBody:
    """``body`` traced on ``example`` (a ragged batch of plain windows); call it with
    another ragged batch for its final hidden states ``[total, hidden]``."""

    def __init__(self, body: torch.nn.Module, example: RaggedBatch) -> None:
        inputs = (example.input_ids, example.position_ids, example.cu_seq_lens)
        with warnings.catch_warnings(record=True) as seen, example.attending():
            warnings.simplefilter("always")
            self._module: Any = torch.jit.trace(_Body(body), inputs, check_trace=False)
        # The tracer warns where Python read a tensor's value (an `if`, a loop, an index
        # taken from data: a mixture of experts' routing): the trace fixes that decision.
        decided = [w for w in seen if _decides(w)]
        if decided:
            first = str(decided[0].message).splitlines()[0][:200]
            raise Untraceable(f"its Python code reads tensor values ({first})")

    def __call__(self, batch: RaggedBatch) -> torch.Tensor:
        if batch.masks:
            raise ValueError("token trees run eagerly, not through a traced body")
        hidden: torch.Tensor = self._module(batch.input_ids, batch.position_ids, batch.cu_seq_lens)
        return hidden


def trace_body(
    body: torch.nn.Module,
    ids: tuple[int, ...],
    device: torch.device,
    exact: bool,
    refusal: str | None,
) -> TracedBody | None:
    """``body`` traced on windows cut from ``ids`` unless ``refusal`` says why not, or None
    with the reason logged (a warning where tracing failed, or where a probe of another
    shape moved by more than 1e-4 (``exact``: float32) or 2% of its largest hidden value)."""
    if refusal is not None:
        log.info("body not traced: %s", refusal)
        return None
    probe = RaggedBatch.of([ids, ids[:1], tuple(reversed(ids)) * 3], device)
    try:
        traced = TracedBody(body, RaggedBatch.of([ids, ids[: max(1, len(ids) // 2)]], device))
        got = traced(probe).float()
        with probe.attending():
            out = body(input_ids=probe.input_ids, position_ids=probe.position_ids, use_cache=False)
        want = out.last_hidden_state[0].float()
    except Untraceable as exc:
        log.info("body not traced: %s", exc)
        return None
    except Exception as exc:  # any model code a trace cannot take
        log.warning("body not traced: %s: %s", type(exc).__name__, str(exc)[:300])
        return None
    worst = largest_difference(want, got)
    if not worst <= (1e-4 if exact else 2e-2) * float(want.abs().max()):
        log.warning("body not traced: a probe moved by %.3g once traced", worst)
        return None
    log.info("body traced for ragged passes (TorchScript)")
    return traced
