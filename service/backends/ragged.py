"""Ragged (padding-free) forward passes for transformers models.

A batch of windows runs as ONE token stream ``[1, total_tokens]``: the linear layers see no
pad at all, position ids restart at 0 for every window, and attention is computed per
window (causal), so no window sees another. This is what vLLM and flash-attention's varlen
kernels do. It plugs into transformers through its attention interface: the model's
attention layers call ``ragged_attention``, which reads the window boundaries from the batch
the running thread is ``attending`` to, and no mask is built.

CPU: one causal SDPA call per window. CUDA with half-precision weights: one
``varlen_attn`` kernel for the whole stream (torch's flash-attention varlen), where it is
available; otherwise (float32) one SDPA call per group of similar-length windows
(``padded_groups``). A lone window is one SDPA call anywhere. Models that soft-cap attention scores (Gemma 2) or add
sink logits (gpt-oss) get attention written out per window, as their eager code does it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from service.backends.padded_groups import PaddedGroup, grouped_attention, padded_groups
from service.backends.scripted_windows import traced_windows, windows_attention
from service.backends.varlen_kernel import find_varlen

log = logging.getLogger(__name__)

IMPLEMENTATION = "lmscore_ragged"
_ATTENDING = threading.local()


@dataclass(frozen=True)
class RaggedBatch:
    """Windows laid end to end: ``input_ids`` and ``position_ids`` ``[1, total]``;
    ``cu_seq_lens`` int32 ``[n + 1]`` (window i is ``[cu[i], cu[i + 1])``); ``starts`` and
    ``lengths`` the same on the host; ``max_length`` the longest window. ``masks`` holds,
    for the windows that are token trees, a boolean ``[length, length]`` mask (a token
    attends to its ancestors and itself); a tree's position ids are its tokens' depths."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seq_lens: torch.Tensor
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    max_length: int
    masks: dict[int, torch.Tensor]

    @functools.cached_property
    def groups(self) -> tuple[PaddedGroup, ...]:
        """The windows in padded groups, built on first use (only CUDA's float32 path,
        where no varlen kernel applies, takes them)."""
        return padded_groups(self.starts, self.lengths, self.cu_seq_lens.device)

    @classmethod
    def of(
        cls,
        windows: Sequence[Sequence[int]],
        device: torch.device,
        trees: Sequence[Sequence[int] | None] | None = None,
    ) -> RaggedBatch:
        trees = trees or [None] * len(windows)
        lengths = tuple(len(w) for w in windows)
        starts = tuple(int(s) for s in torch.tensor((0, *lengths)).cumsum(0)[:-1])
        flat = [token for window in windows for token in window]
        positions: list[int] = []
        masks: dict[int, torch.Tensor] = {}
        for index, (length, parents) in enumerate(zip(lengths, trees, strict=True)):
            if parents is None:
                positions.extend(range(length))
            else:
                depth, masks[index] = tree_layout(parents, device)
                positions.extend(depth)
        cu = torch.tensor((*starts, starts[-1] + lengths[-1]), dtype=torch.int32)
        return cls(
            torch.tensor([flat], dtype=torch.long, device=device),
            torch.tensor([positions], dtype=torch.long, device=device),
            cu.to(device),
            starts,
            lengths,
            max(lengths),
            masks,
        )

    @contextlib.contextmanager
    def attending(self) -> Iterator[RaggedBatch]:
        """This batch is the one this thread's ``ragged_attention`` calls read while the
        block runs (the model's forward). It does not travel down as a keyword argument:
        ``torch.compile`` guards on the Python values that pass through a compiled layer
        (the window count, the longest window), so every new batch shape recompiled."""
        previous = getattr(_ATTENDING, "batch", None)
        _ATTENDING.batch = self
        try:
            yield self
        finally:
            _ATTENDING.batch = previous


def attending_batch() -> RaggedBatch | None:
    """The batch this thread's model is running (``RaggedBatch.attending``), if any."""
    batch: RaggedBatch | None = getattr(_ATTENDING, "batch", None)
    return batch


@dataclass(frozen=True)
class Windows:
    """Where one attention call's windows lie in the stream: ``starts`` and ``lengths``,
    token trees' masks by window index, and the stream's position ids (a tree's are its
    depths), all ``RaggedBatch``'s."""

    starts: Sequence[int]
    lengths: Sequence[int]
    trees: dict[int, torch.Tensor]
    positions: torch.Tensor | None


def tree_layout(parents: Sequence[int], device: torch.device) -> tuple[list[int], torch.Tensor]:
    """Position ids (depths) of a token tree and its attention mask (ancestors and self)."""
    size = len(parents)
    mask = torch.zeros(size, size, dtype=torch.bool)
    depth = [0] * size
    for p, parent in enumerate(parents):
        if parent >= 0:
            if parent >= p:
                raise ValueError("a token's parent must come before it")
            mask[p] = mask[parent]
            depth[p] = depth[parent] + 1
        mask[p, p] = True
    return depth, mask.to(device)


def ragged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention per window over a ``[1, heads, total, head_dim]`` token stream.

    Returns ``[1, total, heads, head_dim]`` as transformers' attention functions do.
    Outside a batch's ``attending`` block (one plain sequence per row) it is ordinary
    causal SDPA.
    """
    batch = attending_batch()
    windows = (
        Windows((0,), (query.shape[2],), {}, None)
        if batch is None
        else Windows(batch.starts, batch.lengths, batch.masks, batch.position_ids[0])
    )
    sliding = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    extras = ScoreExtras(kwargs.get("softcap"), kwargs.get("s_aux"))
    stream = batch is not None and query.shape[0] == 1
    if torch.jit.is_tracing():
        return traced_windows(query, key, value, batch, scaling, sliding, extras.none), None
    if sliding is not None and max(windows.lengths) <= sliding:
        sliding = None  # no window reaches past it: plain causal attention
    if query.is_cuda and torch.is_autocast_enabled("cuda"):
        # What autocast does to SDPA's inputs, done here so the varlen kernel (which
        # autocast does not know) takes them too: rotary embeddings leave float32 queries.
        half = torch.get_autocast_dtype("cuda")
        query, key, value = (t.to(half) for t in (query, key, value))
    # One window is one SDPA call; several take one kernel for the whole stream where the
    # windows are plain causal sequences.
    several = stream and len(windows.lengths) > 1 and not windows.trees and extras.none
    if several and _use_varlen(query, sliding, scaling):
        assert batch is not None
        out = _varlen(query, key, value, batch, scaling)
    elif several and batch is not None and sliding is None and _groups_pay(query):
        key, value, gqa = _heads_for_sdpa(query, key, value, masked=False)
        out = grouped_attention(query, key, value, batch.groups, scaling, gqa)
    elif several and sliding is None and not query.is_cuda and not torch.is_autocast_enabled("cpu"):
        # TorchScript applies autocast by its own pass; bf16-mixed keeps the eager loop.
        key, value, gqa = _heads_for_sdpa(query, key, value, masked=False)
        assert batch is not None
        out = windows_attention()(query, key, value, batch.cu_seq_lens, scaling, gqa)
    else:
        out = _per_window(query, key, value, windows, scaling, sliding, extras)
    return out, None


# Attention scores held at once by the written-out path (float32: 64 MiB): queries go in
# blocks, so a long window never holds [heads, L, L].
WRITTEN_OUT_SCORES = 1 << 24


@dataclass(frozen=True)
class ScoreExtras:
    """What some models add to attention scores and SDPA has no argument for: a soft cap
    (``cap * tanh(score / cap)``, Gemma 2) and per-head sink logits that join each
    softmax and are then dropped (gpt-oss)."""

    softcap: float | None = None
    sinks: torch.Tensor | None = None

    @property
    def none(self) -> bool:
        return self.softcap is None and self.sinks is None


def _per_window(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    windows: Windows,
    scaling: float | None,
    sliding: int | None,
    extras: ScoreExtras,
) -> torch.Tensor:
    """One SDPA call per window (causal, or a token tree's mask), or attention written out
    where the model has score extras; output ``[1, total, heads, head_dim]``."""
    starts, lengths, trees = windows.starts, windows.lengths, windows.trees
    masked = sliding is not None or bool(trees)
    key, value, gqa = _heads_for_sdpa(query, key, value, masked)
    out = query.new_empty(query.shape[0], query.shape[2], query.shape[1], query.shape[3])
    for index, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        span = slice(start, start + length)
        mask = trees.get(index)
        if mask is None:
            mask = _sliding_mask(length, sliding, query.device)
        elif sliding is not None and windows.positions is not None:
            depth = windows.positions[span]  # along a branch, as far back as depths say
            mask = mask & (depth[:, None] - depth[None, :] < sliding)
        if extras.none:
            part = F.scaled_dot_product_attention(
                query[:, :, span],
                key[:, :, span],
                value[:, :, span],
                attn_mask=mask,
                is_causal=mask is None,
                scale=scaling,
                enable_gqa=gqa,
            )
        else:
            part = _written_out(
                query[:, :, span], key[:, :, span], value[:, :, span], mask, scaling, extras
            )
        out[:, span] = part.transpose(1, 2)
    return out


def _heads_for_sdpa(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, masked: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Key and value as SDPA takes them here, and whether to pass ``enable_gqa``. CUDA's
    SDPA takes grouped heads only in its flash and math kernels; flash takes no mask, no
    float32, no pre-Ampere GPU and no head over 256, and the math kernel would hold
    [heads, L, L] scores. Repeated key/value heads keep the memory-efficient kernel (as
    transformers does)."""
    gqa = query.shape[1] != key.shape[1]
    if gqa and query.is_cuda and (masked or not _flash(query)):
        key, value = _repeat_heads(query, key, value)
        gqa = False
    return key, value, gqa


def _written_out(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
    extras: ScoreExtras,
) -> torch.Tensor:
    """Attention of one window as the models' eager code computes it, with soft-capped
    scores and sink logits; the softmax in float32. ``query`` [1, H, L, D], ``key`` and
    ``value`` [1, H_kv, L, D], ``mask`` bool [L, L] (None: causal); output [1, H, L, D]."""
    key, value = _repeat_heads(query, key, value)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    heads, length = query.shape[1], query.shape[2]
    if mask is None:
        mask = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
    out = torch.empty_like(query)
    rows = max(1, WRITTEN_OUT_SCORES // (heads * length))  # queries per block
    for top in range(0, length, rows):
        block = slice(top, top + rows)
        scores = torch.matmul(query[:, :, block], key.transpose(-1, -2)) * scale
        if extras.softcap is not None:
            scores = torch.tanh(scores / extras.softcap) * extras.softcap
        scores = scores.float().masked_fill(~mask[block], float("-inf"))
        if extras.sinks is None:
            probs = torch.softmax(scores, dim=-1)
        else:
            sinks = extras.sinks.float().reshape(1, -1, 1, 1).expand(1, -1, scores.shape[2], 1)
            probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :-1]
        out[:, :, block] = torch.matmul(probs.to(value.dtype), value)
    return out


def _repeat_heads(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value with each grouped head repeated for its query heads (as transformers'
    ``repeat_kv``: kv head i serves query heads i*g .. i*g + g - 1)."""
    groups = query.shape[1] // key.shape[1]
    if groups == 1:
        return key, value
    return key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)


def _sliding_mask(length: int, sliding: int | None, device: torch.device) -> torch.Tensor | None:
    """A boolean causal mask limited to ``sliding`` tokens back, when the window needs one."""
    if sliding is None or length <= sliding:
        return None
    pos = torch.arange(length, device=device)
    back = pos[:, None] - pos[None, :]
    return (back >= 0) & (back < sliding)


def _use_varlen(query: torch.Tensor, sliding: int | None, scaling: float | None) -> bool:
    """Whether torch's flash-attention varlen kernel takes this stream."""
    return _VARLEN is not None and _VARLEN.takes(query, sliding, scaling) and _flash(query)


def _groups_pay(query: torch.Tensor) -> bool:
    """Whether padded groups beat one SDPA call per window: on a GPU, where a small
    model's forward pass is bound by kernel launches; a CPU has no launches to save."""
    return query.is_cuda


def _flash(query: torch.Tensor) -> bool:
    """Whether flash attention runs here: CUDA, half precision, heads up to 256, compute
    capability 8.0+."""
    return (
        query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and query.shape[-1] <= 256
        and _capability(query.device.index) >= (8, 0)
    )


@functools.cache
def _capability(index: int | None) -> tuple[int, int]:
    """The CUDA device's compute capability, asked once (not per layer of every pass)."""
    return torch.cuda.get_device_capability(index)


def _varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: RaggedBatch,
    scaling: float | None,
) -> torch.Tensor:
    """The whole stream in one flash-attention varlen kernel (CUDA, half precision)."""
    assert _VARLEN is not None
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [total, heads, dim]
    options: dict[str, Any] = {}
    if _VARLEN.takes_scale:
        options["scale"] = scaling
    if _VARLEN.takes_window:
        options["window_size"] = (-1, 0)  # causal
    else:
        options["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if _VARLEN.takes_gqa:
            options["enable_gqa"] = True
        else:
            k, v = _repeat_heads(q, k, v)  # heads are dim 1 here too
    bounds, longest = batch.cu_seq_lens, batch.max_length
    return _VARLEN.kernel(q, k, v, bounds, bounds, longest, longest, **options).unsqueeze(0)


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """Ragged attention isolates windows itself; transformers builds no mask for it."""
    return None


_VARLEN = find_varlen()


def register() -> str:
    """Register the ragged attention with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, torch.compiler.disable(ragged_attention))
    AttentionMaskInterface.register(IMPLEMENTATION, _no_mask)
    return IMPLEMENTATION
