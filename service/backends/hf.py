"""The transformers backend: a causal LM resident on one device.

Sequences of one batch are right-padded with no attention mask: under causal attention
a real token never attends to the pads after it, and SDPA keeps its fast causal path.
Only the hidden states of scored positions go through the vocabulary projection, a
bounded chunk at a time (see ``scoring.logprobs``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.backends.base import BackendInfo, ForwardItem, ForwardResult, bos_or_eos
from service.scoring.logprobs import PositionScores, score_hidden_states

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    """``auto`` -> bfloat16 where it is fast (CUDA with bf16, AMX/AVX512-BF16 CPUs), else float32."""
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else torch.float32


class HFBackend:
    """A transformers causal LM that scores windows of token ids."""

    def __init__(
        self,
        path: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_context: int | None = None,
        logits_chunk: int = 256,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.model: Any = model.to(self.device).eval()
        self._body: Any = self.model.base_model
        self._head: Any = self.model.get_output_embeddings()
        self._softcap: float | None = getattr(self.model.config, "final_logit_softcapping", None)
        self._logit_scale: float | None = getattr(self.model.config, "logit_scale", None)
        self._chunk = logits_chunk
        self._pad_id = self._pick_pad_id()
        context = model_context(self.model.config)
        if max_context is not None:
            context = min(context, max_context)
        self.info = BackendInfo(
            backend="transformers",
            dtype=str(self.dtype).removeprefix("torch."),
            device=str(self.device),
            max_context=context,
        )

    def _pick_pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def bos_id(self) -> int:
        """BOS, or EOS if the tokenizer has none."""
        return bos_or_eos(self.tokenizer)

    def warmup(self) -> None:
        """One small forward of two windows."""
        ids = tuple(
            self.tokenizer.encode("Warm-up: the quick brown fox.", add_special_tokens=False)
        )
        self.forward(
            [ForwardItem(ids, 1, 2, True), ForwardItem(ids[: max(2, len(ids) // 2)], 1, 0)]
        )

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._head(hidden)
        if self._logit_scale is not None:
            logits = logits * self._logit_scale
        if self._softcap is not None:
            logits = torch.tanh(logits.float() / self._softcap) * self._softcap
        return logits

    @torch.inference_mode()
    def forward(self, items: list[ForwardItem]) -> list[ForwardResult]:
        """Score a batch of windows (right-padded, one forward pass)."""
        if not items:
            return []
        width = max(len(item.input_ids) for item in items)
        ids = torch.full((len(items), width), self._pad_id, dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []  # the hidden state at position p-1 predicts the token at p
        targets: list[int] = []
        for b, item in enumerate(items):
            length = len(item.input_ids)
            ids[b, :length] = torch.tensor(item.input_ids, dtype=torch.long)
            rows.extend([b] * item.num_scored)
            cols.extend(range(item.score_from - 1, length - 1))
            targets.extend(item.input_ids[item.score_from :])
            if item.next_token:  # the distribution after the last token; no target
                rows.append(b)
                cols.append(length - 1)
                targets.append(0)
        hidden = self._body(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
        row_t = torch.tensor(rows, dtype=torch.long, device=self.device)
        col_t = torch.tensor(cols, dtype=torch.long, device=self.device)
        scores = score_hidden_states(
            hidden[row_t, col_t],
            torch.tensor(targets, dtype=torch.long, device=self.device),
            self._project,
            max(item.top_k for item in items),
            self._chunk,
            with_ranks=any(item.with_ranks for item in items),
        )
        return _split(scores, items)


def _split(scores: PositionScores, items: list[ForwardItem]) -> list[ForwardResult]:
    logprobs = scores.logprobs.cpu().numpy()
    ranks = scores.ranks.cpu().numpy()
    top_ids = scores.top_ids.cpu().numpy()
    top_lps = scores.top_logprobs.cpu().numpy()
    results: list[ForwardResult] = []
    offset = 0
    for item in items:
        n, k = item.num_scored, item.top_k
        span = slice(offset, offset + n)
        result = ForwardResult(
            logprobs[span],
            ranks[span].astype(np.int64),
            top_ids[span, :k].astype(np.int64),
            top_lps[span, :k],
        )
        offset += n
        if item.next_token:
            result = dataclasses.replace(
                result,
                next_top_ids=top_ids[offset, :k].astype(np.int64),
                next_top_logprobs=top_lps[offset, :k],
            )
            offset += 1
        results.append(result)
    return results


def model_context(config: Any) -> int:
    """The model's own context length from its config."""
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 1:
            return value
    return 2048
