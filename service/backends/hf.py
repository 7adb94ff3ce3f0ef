"""The transformers backend: a causal LM resident on one device.

Batches are ragged where the model allows it (see ``ragged``: one token stream, position
ids restarting per window, causal attention per window, no pads), chosen at load time by
checking that a ragged batch scores like the same windows one at a time. Otherwise they
are right-padded with no attention mask: under causal attention a real token never
attends to the pads after it, and SDPA keeps its fast causal path. Only the hidden states
of scored positions go through the vocabulary projection, a bounded chunk at a time (see
``scoring.logprobs``), with a float32 log-softmax; a linear head scoring only the targets
is applied one vocabulary slice at a time (``scoring.projection``). With ``--compile`` the
decoder layers run compiled by inductor, attention left eager (see ``compiled``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from service.backends import cpu_lanes, cpu_threads, ragged
from service.backends.base import (
    BackendInfo,
    BatchLayout,
    ForwardItem,
    ForwardResult,
    bos_or_eos,
)
from service.backends.compiled import CompiledLayers, compile_refusal, decoder_layers
from service.backends.forward_results import split_scores
from service.backends.logit_head import LogitTransform, check_head
from service.backends.packed_linear import pack_decoder_layers, packing_refusal
from service.backends.precision import (
    Precision,
    model_context,
    pick_device,
    skip_cudnn_attention,
)
from service.backends.ragged import RaggedBatch
from service.backends.traced_body import TracedBody, trace_body, tracing_refusal
from service.scoring.logprobs import Projection, score_hidden_states
from service.scoring.projection import DEFAULT_VOCAB_SLICE, VocabProjection, scale_and_cap

log = logging.getLogger(__name__)


class HFBackend:
    """A transformers causal LM that scores windows of token ids."""

    def __init__(
        self,
        path: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_context: int | None = None,
        attention: str = "auto",
        compile_layers: str = "off",
        pack_weights: str = "auto",
        trace_body: str = "auto",
        lane_count: int | None = None,
        logits_chunk: int = 256,
        vocab_slice: int | None = DEFAULT_VOCAB_SLICE,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.device = pick_device(device)
        if self.device.type == "cpu":
            cpu_threads.fit_threads()
            cpu_lanes.CPU_LANES.configure(lane_count)
        skip_cudnn_attention(self.device)
        self.precision = Precision.pick(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=self.precision.weights)
        self.model: Any = model.to(self.device).eval()
        keep_attention_softcap(self.model)
        self._body: Any = self.model.base_model
        self._head: Any = self.model.get_output_embeddings()
        self._transform = LogitTransform.of(self.model.config)
        self._project = self._pick_projection(vocab_slice)
        self._chunk = logits_chunk
        self._pad_id = self._pick_pad_id()
        self._check_head()
        self._bow: torch.Tensor | None = None
        context = model_context(self.model.config)
        if max_context is not None:
            context = min(context, max_context)
        self.info = BackendInfo(
            backend="transformers",
            dtype=self.precision.name,
            device=str(self.device),
            max_context=context,
            vocab_size=int(self.model.get_input_embeddings().weight.shape[0]),
        )
        self.traced: TracedBody | None = None  # set once the layout is known
        self.layout = self._pick_layout(attention)
        if self.layout is BatchLayout.RAGGED:
            self.info = dataclasses.replace(self.info, token_trees=True)
        log.info("%s: %s batches", path.name, self.layout.value)
        self.compiled = self._compile(compile_layers)
        self.packed_layers = self._pack_weights(pack_weights)
        self.traced = self._trace_body(trace_body)

    def _compile(self, requested: str) -> CompiledLayers | None:
        """The decoder layers compiled (see ``compiled``), or None with the reason logged:
        a warning when ``on`` was asked for."""
        refusal = compile_refusal(requested, self.device, self.layout is BatchLayout.RAGGED)
        layers = decoder_layers(self.model) if refusal is None else []
        if refusal is None and not layers:
            refusal = f"{type(self.model).__name__} names no decoder layers"
        if refusal is not None:
            say = log.warning if requested == "on" else log.info
            say("decoder layers run eagerly: %s", refusal)
            return None
        log.info("compiling %d decoder layers (inductor) at warm-up", len(layers))
        return CompiledLayers(layers, on_fallback=self._report_compiled)

    @torch.inference_mode()
    def _pack_weights(self, requested: str) -> int:
        """Pack the decoder layers' linear weights (see ``packed_linear``); how many."""
        refusal = packing_refusal(requested, self.device, self.precision.weights)
        if refusal is None and self.compiled is not None:
            refusal = "compiled layers run inductor's own kernels"
        return pack_decoder_layers(decoder_layers(self.model), self._probe_logits, refusal)

    @torch.inference_mode()
    def _trace_body(self, requested: str) -> TracedBody | None:
        """The body traced for ragged CPU passes (see ``traced_body``), or None."""
        refusal = tracing_refusal(
            requested,
            self.device,
            ragged=self.layout is BatchLayout.RAGGED,
            compiled=self.compiled is not None,
            autocast=self.precision.autocast is not None,
            config=self.model.config,
        )
        ids = self.tokenizer.encode("Trace: one stream of windows.", add_special_tokens=False)
        return trace_body(self._body, tuple(ids), self.device, self.precision.exact, refusal)

    def _probe_logits(self) -> torch.Tensor:
        """Logits of a short probe text, one window, as a forward pass computes them."""
        ids = self.tokenizer.encode("Probe: packed weights, same logits.", add_special_tokens=False)
        with self.precision.context(self.device):
            hidden, _ = self._padded_hidden([tuple(ids)])
            return self._project(hidden)

    def _report_compiled(self) -> None:
        """``info.compiled`` follows whether the layers run compiled now."""
        compiled = self.compiled is not None and self.compiled.active
        self.info = dataclasses.replace(self.info, compiled=compiled)

    def _pick_layout(self, requested: str) -> BatchLayout:
        """Ragged when asked for or possible (``auto``), padded otherwise."""
        if requested == "padded":
            return BatchLayout.PADDED
        reason = self._ragged_unsupported()
        if reason is None:
            return BatchLayout.RAGGED
        if requested == "ragged":
            raise RuntimeError(f"--attention ragged: {reason}")
        log.warning("ragged batches unavailable (%s); batches are padded", reason)
        return BatchLayout.PADDED

    @torch.inference_mode()
    def _ragged_unsupported(self) -> str | None:
        """Why this model cannot run ragged batches, or None once a probe showed that two
        windows scored as one stream match them scored one at a time."""
        if not getattr(self.model, "_supports_attention_backend", False):
            return f"{type(self.model).__name__} has no pluggable attention"
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation(ragged.register())
        ids = self.tokenizer.encode(
            "Probe: a ragged batch must not leak.", add_special_tokens=False
        )
        probe = [tuple(ids), tuple(reversed(ids))[: max(2, len(ids) - 3)]]
        try:
            with self.precision.context(self.device):
                hidden, starts = self._ragged_hidden(probe)
                together = self._project(hidden).float()
                alone = [self._project(self._ragged_hidden([w])[0]).float() for w in probe]
        except Exception as exc:  # any model code that cannot take the stream
            self.model.set_attn_implementation(previous)
            return f"the probe failed: {type(exc).__name__}: {exc}"
        worst = max(
            float((together[start : start + len(w)] - one[: len(w)]).abs().max())
            for start, w, one in zip(starts, probe, alone, strict=True)
        )
        # A leak between windows moves logits by whole units; half precision rounds a
        # logit of 30 to 0.125, and a batch's shape can flip that rounding.
        largest = max(float(one.abs().max()) for one in alone)
        limit = 0.05 if self.precision.exact else 0.02 * max(1.0, largest)
        if not worst <= limit:
            self.model.set_attn_implementation(previous)
            return f"a ragged probe differed from separate windows by {worst:.3g}"
        return None

    def _pick_pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def bos_id(self) -> int | None:
        """BOS, or EOS if the tokenizer has none."""
        return bos_or_eos(self.tokenizer)

    def close(self) -> None:
        """Nothing to release beyond memory, which goes with the object."""

    def _bow_mask(self) -> torch.Tensor:
        """Beginning-of-word tokens (see ``scoring.words``), computed once."""
        if self._bow is None:
            vocab = int(self._head.weight.shape[0])  # one entry per logit
            self._bow = beginning_of_word_mask(self.tokenizer, vocab).to(self.device)
        return self._bow

    def warmup(self) -> None:
        """One small forward of two windows. Compiled layers get two more, so that they
        compile every graph now rather than under a request: dynamo's first trace ties
        sizes that happen to be equal (duck sizing), and a one-token stream is a case of
        its own."""
        ids = tuple(
            self.tokenizer.encode("Warm-up: the quick brown fox.", add_special_tokens=False)
        )
        self.forward(
            [ForwardItem(ids, 1, 2, True), ForwardItem(ids[: max(2, len(ids) // 2)], 1, 0)]
        )
        if self.compiled is not None:
            self.forward([ForwardItem(ids[:3], 1)])
            self.forward([ForwardItem(ids[:1], 1, 1, next_token=True)])
            self._report_compiled()
            if self.compiled.active:
                log.info("decoder layers compiled")

    def _pick_projection(self, vocab_slice: int | None) -> Projection | VocabProjection:
        """A linear head as a ``VocabProjection`` (its vocabulary can be sliced), any other
        head, or any head with ``vocab_slice=None``, as the module itself followed by the
        model's logit scale and soft cap (whole rows of logits)."""
        scale, softcap = self._transform.scale, self._transform.softcap
        if vocab_slice is not None and type(self._head) is torch.nn.Linear:
            return VocabProjection(self._head.weight, self._head.bias, scale, softcap, vocab_slice)
        return self._project_with_module

    def _project_with_module(self, hidden: torch.Tensor) -> torch.Tensor:
        return scale_and_cap(self._head(hidden), self._transform.scale, self._transform.softcap)

    @torch.inference_mode()
    def _check_head(self) -> None:
        """Refuse a model whose own logits the body + head split does not reproduce."""
        ids = self.tokenizer.encode("Head check: one, two, three.", add_special_tokens=False)
        with self.precision.context(self.device):
            hidden, _ = self._padded_hidden([tuple(ids)])
            check_head(
                self.model,
                torch.tensor([ids], dtype=torch.long, device=self.device),
                hidden,
                self._project,
                exact=self.precision.exact,
            )

    @property
    def lanes(self) -> int:
        """The process's CPU lanes (``cpu_lanes``) for an eager CPU model; 1 on CUDA, and
        for compiled layers (inductor fixes their kernels' thread count when it compiles)."""
        if self.device.type != "cpu" or self.compiled is not None:
            return 1
        return cpu_lanes.CPU_LANES.count

    def forward(self, items: list[ForwardItem], lane: int | None = None) -> list[ForwardResult]:
        """Score a batch of windows in one forward pass (ragged or right-padded). On CPU the
        pass runs on one of the process's CPU lanes (``cpu_lanes.CPU_LANES``): ``lane``'s
        share of the threads, or with ``None`` every thread, whichever thread calls."""
        if not items:
            return []
        if self.device.type == "cpu":
            share = lane if self.lanes > 1 else None
            return cpu_lanes.CPU_LANES.run(lambda: self._forward(items), share)
        return self._forward(items)

    @torch.inference_mode()
    def _forward(self, items: list[ForwardItem]) -> list[ForwardResult]:
        windows = [item.model_input for item in items]
        trees = [item.parents for item in items]
        with self.precision.context(self.device):
            if self.layout is BatchLayout.RAGGED:
                hidden, origins = self._ragged_hidden(windows, trees)
            elif any(tree is not None for tree in trees):
                raise ValueError("token trees need ragged batches")
            else:
                hidden, origins = self._padded_hidden(windows)
            return self._score_apart(hidden, origins, items)

    def _score_apart(
        self, hidden: torch.Tensor, origins: list[int], items: list[ForwardItem]
    ) -> list[ForwardResult]:
        """Items that want whole log-softmax rows are scored apart from the rest, so the
        rows of the items that did not ask for them are never kept."""
        full = [i for i, item in enumerate(items) if item.with_full]
        if not full or len(full) == len(items):
            return self._score(hidden, origins, items)
        rest = [i for i, item in enumerate(items) if not item.with_full]
        results: dict[int, ForwardResult] = {}
        for group in (full, rest):
            scored = self._score(hidden, [origins[i] for i in group], [items[i] for i in group])
            results.update(zip(group, scored, strict=True))
        return [results[i] for i in range(len(items))]

    def _score(
        self, hidden: torch.Tensor, origins: list[int], items: list[ForwardItem]
    ) -> list[ForwardResult]:
        """Scores of every item's scored positions from the batch's final hidden states
        (flattened; item i's positions start at ``origins[i]``)."""
        flat: list[int] = []  # the hidden state at position p-1 predicts the token at p
        targets: list[int] = []
        for origin, item in zip(origins, items, strict=True):
            length = len(item.input_ids)
            flat.extend(origin + item.predecessor(p) for p in range(item.score_from, length))
            targets.extend(item.input_ids[item.score_from :])
            if item.next_token:  # the distribution after the last token; no target
                flat.append(origin + length - 1)
                targets.append(0)
        index = torch.tensor(flat, dtype=torch.long).to(self.device, non_blocking=True)
        scores = score_hidden_states(
            hidden.index_select(0, index),
            torch.tensor(targets, dtype=torch.long).to(self.device, non_blocking=True),
            self._project,
            max(item.top_k for item in items),
            self._chunk,
            with_ranks=any(item.with_ranks for item in items),
            with_stats=any(item.with_stats for item in items),
            bow_mask=self._bow_mask() if any(item.with_bow for item in items) else None,
            with_full=any(item.with_full for item in items),
        )
        return split_scores(scores, items)

    def _ragged_hidden(
        self,
        windows: list[tuple[int, ...]],
        trees: list[tuple[int, ...] | None] | None = None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Final hidden states ``[total, H]`` of the windows as one token stream, and
        where each window starts in it."""
        batch = RaggedBatch.of(windows, self.device, trees)
        if self.traced is not None and not batch.masks:
            return self.traced(batch), list(batch.starts)
        with batch.attending():
            out = self._body(
                input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
            )
        return out.last_hidden_state[0], list(batch.starts)

    def _padded_hidden(self, windows: list[tuple[int, ...]]) -> tuple[torch.Tensor, list[int]]:
        """Final hidden states ``[count x longest, H]`` of the right-padded windows, and
        where each window's row starts. No attention mask: under causal attention a real
        token never attends to the pads after it."""
        width = max(len(w) for w in windows)
        ids = torch.full((len(windows), width), self._pad_id, dtype=torch.long)
        for b, window in enumerate(windows):
            ids[b, : len(window)] = torch.tensor(window, dtype=torch.long)
        hidden = self._body(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1]), [b * width for b in range(len(windows))]


def beginning_of_word_mask(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """bool [vocab_size]: tokens that start a new word in a leading-space tokenizer (their
    piece carries a space marker, or their text starts with whitespace: a space, a
    newline...), and the end-of-text token. Ids the tokenizer lacks (padded embedding
    rows) are False; tokens beyond ``vocab_size`` are left out."""
    ids = list(range(min(len(tokenizer), vocab_size)))
    pieces = tokenizer.convert_ids_to_tokens(ids)
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        if (piece and piece[0] in "Ġ▁") or (text and text[0].isspace()):
            mask[i] = True
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id < vocab_size:
        mask[int(tokenizer.eos_token_id)] = True
    return mask


def keep_attention_softcap(model: Any) -> None:
    """Run a model that soft-caps its attention scores (Gemma 2) with its own eager
    attention where it was loaded with SDPA: some transformers releases do that, and SDPA
    drops the cap (moving logprobs by a tenth of a nat on a tiny model)."""
    config = model.config
    if getattr(config, "attn_logit_softcapping", None) and config._attn_implementation == "sdpa":
        log.info("attention soft cap: eager attention instead of SDPA for padded batches")
        model.set_attn_implementation("eager")
