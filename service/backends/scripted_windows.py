"""Causal attention over a stream's windows, one SDPA call each, looped in TorchScript.

On CPU a ragged batch runs one SDPA call per window in every layer: 16 short texts and 30
layers make 480 calls a pass, each with its slicing and copying done by the Python
interpreter while it holds the GIL. The same loop as a TorchScript function runs in
TorchScript's interpreter, which releases the GIL while it runs, and it is what a traced
body (``traced_body``) calls for attention: the window bounds are an input tensor there,
not Python values baked into the trace. It computes exactly what a Python loop over the
windows would (the same SDPA calls on the same slices).

``torch.jit.script`` is deprecated in torch 2.13 but works; where scripting fails (a future
torch without it, no source files to read) the Python function runs, and bodies are not
traced.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from service.backends.ragged import RaggedBatch

log = logging.getLogger(__name__)

WindowsAttention = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float | None, bool], torch.Tensor
]


class Untraceable(RuntimeError):
    """A model whose forward a trace would not reproduce for other batches."""


def causal_windows(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    scale: float | None,
    gqa: bool,
) -> torch.Tensor:
    """Causal SDPA of each window ``[cu[i], cu[i + 1])`` of a ``[1, heads, total, dim]``
    stream (``key`` and ``value`` may have fewer heads with ``gqa``); output
    ``[1, total, heads, dim]``. ``cu_seq_lens``: the windows' bounds, ``[windows + 1]``."""
    out = query.new_empty(query.shape[0], query.shape[2], query.shape[1], query.shape[3])
    bounds: list[int] = cu_seq_lens.long().tolist()
    for index in range(len(bounds) - 1):
        start, stop = bounds[index], bounds[index + 1]
        part = F.scaled_dot_product_attention(
            query[:, :, start:stop],
            key[:, :, start:stop],
            value[:, :, start:stop],
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        )
        out[:, start:stop] = part.transpose(1, 2)
    return out


def quietly_script(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor] | None:
    """``torch.jit.script(function)`` without its deprecation warning, or None (logged)
    where TorchScript cannot take it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            scripted: Callable[..., torch.Tensor] = torch.jit.script(function)
    except Exception as exc:  # any reason TorchScript cannot take it here
        log.info("TorchScript cannot compile %s: %s", function.__name__, exc)
        return None
    return scripted


@functools.cache
def scripted_windows() -> WindowsAttention | None:
    """``causal_windows`` compiled by TorchScript, or None where scripting fails."""
    return quietly_script(causal_windows)


def windows_attention() -> WindowsAttention:
    """The scripted loop where TorchScript takes it, else the Python function."""
    return scripted_windows() or causal_windows


def traced_windows(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: RaggedBatch | None,
    scaling: float | None,
    sliding: int | None,
    plain_scores: bool,
) -> torch.Tensor:
    """Attention as a traced body records it (``traced_body``): the scripted loop over the
    windows, their bounds an input of the trace. A model whose attention depends on more
    than the bounds (a sliding window, score extras such as a soft cap or sinks, token
    trees) cannot be traced: this raises, and the body runs eagerly."""
    scripted = scripted_windows()
    if batch is None or query.shape[0] != 1:
        refusal: str | None = "no ragged batch is being attended to"
    elif scripted is None:
        refusal = "TorchScript cannot compile the attention loop"
    elif sliding is not None:
        refusal = "its attention has a sliding window"
    elif not plain_scores:
        refusal = "its attention has score extras (a soft cap or sinks)"
    elif batch.masks:
        refusal = "token trees are not traced"
    else:
        refusal = None
    if refusal is not None:
        raise Untraceable(f"the body cannot be traced: {refusal}")
    assert batch is not None and scripted is not None
    gqa = query.shape[1] != key.shape[1]
    return scripted(query, key, value, batch.cu_seq_lens, scaling, gqa)
