"""The vLLM backend: the same scoring contract served by vLLM's async engine.

vLLM batches by itself (continuous batching, paged attention), so this backend takes
windows one request each behind the pass-through scheduler (a ``SelfBatchingBackend``);
admission control, deadlines, validation, chat rendering and aggregates stay ours.
Each window is one vLLM request with ``prompt_logprobs`` (k = top_k; 0 still returns the
token's own logprob and rank) and ``max_tokens=1``; a cancelled caller aborts it.

vLLM is imported lazily: the default install does not have it (``make install-vllm``).
Prefix caching stays off: it has returned wrong prompt logprobs in some vLLM versions.
vLLM does not reserve memory for prompt logprobs when it profiles, so the default GPU
memory utilisation is conservative (0.80).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service import metrics
from service.backends.base import BackendInfo, ForwardItem, ForwardResult, bos_or_eos
from service.backends.precision import MIXED, model_context, pick_device, pick_dtype
from service.errors import InvalidRequest, Unavailable
from service.tasks import gather_or_cancel

log = logging.getLogger(__name__)


class VLLMBackend:
    """Windows scored by ``vllm.v1.engine.async_llm.AsyncLLM``."""

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        dtype: str = "auto",
        device: str = "auto",
        max_context: int | None = None,
        gpu_memory_utilization: float = 0.8,
        tensor_parallel_size: int = 1,
        max_num_batched_tokens: int | None = None,
        enforce_eager: bool | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if dtype == MIXED:
            raise RuntimeError(f"--dtype {MIXED} is for the transformers backend")
        on_cuda = pick_device(device).type == "cuda"
        # On CUDA, ``auto`` is vLLM's to resolve: asking torch here would start CUDA in this
        # process, which forces vLLM's workers to spawn and keeps a context here.
        vllm_dtype = (
            "auto"
            if on_cuda and dtype == "auto"
            else str(pick_dtype(dtype, torch.device("cuda" if on_cuda else "cpu")))
        ).removeprefix("torch.")
        if not on_cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB of KV cache
        self.name = name
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        native = model_context(config)
        context = native if max_context is None else min(native, max_context)
        # vLLM keeps room for the one token it generates after a prompt, so it refuses a
        # prompt of max_model_len tokens: windows of ``context`` tokens fit where the model
        # allows one more position; at the model's own length they are one token shorter.
        model_len = context + 1 if context < native else context
        context = model_len - 1
        args = AsyncEngineArgs(
            model=str(path),
            dtype=vllm_dtype,
            max_model_len=model_len,
            enable_prefix_caching=False,
            enforce_eager=(not on_cuda) if enforce_eager is None else enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_num_batched_tokens=max_num_batched_tokens,
            max_logprobs=20,
        )
        self.engine: Any = AsyncLLM.from_engine_args(args)
        self.info = BackendInfo(
            backend="vllm",
            dtype=str(self.engine.model_config.dtype).removeprefix("torch."),
            device="cuda" if on_cuda else "cpu",
            max_context=context,
            full_distribution=False,
            vocab_size=int(config.get_text_config().vocab_size),
        )
        self._aborted = metrics.BACKEND_ABORTS.labels(model=name)

    def bos_id(self) -> int | None:
        """BOS, or EOS if the tokenizer has none."""
        return bos_or_eos(self.tokenizer)

    async def warmup(self) -> None:
        """One small request, so the first caller does not pay for lazy start-up."""
        ids = tuple(
            self.tokenizer.encode("Warm-up: the quick brown fox.", add_special_tokens=False)
        )
        await self.score([ForwardItem(ids, 1, 2, True, True)])

    async def score(self, items: list[ForwardItem]) -> list[ForwardResult]:
        """Score windows concurrently (vLLM batches them with everything else in flight).
        A window that fails cancels its siblings, which aborts them in vLLM: the caller's
        slot is freed when this returns, so no work may outlive it."""
        return await gather_or_cancel(*(self._one(item) for item in items))

    async def _one(self, item: ForwardItem) -> ForwardResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=item.top_k,
            logprobs=item.top_k if item.next_token else None,
            detokenize=False,
        )
        request_id = f"lmscore-{uuid.uuid4().hex}"
        final = None
        try:
            prompt = TokensPrompt(prompt_token_ids=list(item.input_ids))
            async for output in self.engine.generate(prompt, params, request_id):
                final = output
        except asyncio.CancelledError:
            await asyncio.shield(self._abort(request_id))
            raise
        except Exception as exc:
            ours = _translated(exc)
            if ours is exc:
                raise
            raise ours from exc
        if final is None or final.prompt_logprobs is None:
            raise RuntimeError("vLLM returned no prompt logprobs")
        return convert_output(item, final)

    async def _abort(self, request_id: str) -> None:
        try:
            await self.engine.abort(request_id)
            self._aborted.inc()
        except Exception:  # the request may have finished meanwhile
            log.debug("abort of %s failed", request_id, exc_info=True)

    def close(self) -> None:
        """Stop vLLM's engine core processes."""
        self.engine.shutdown()


def _translated(exc: Exception) -> Exception:
    """vLLM's refusal of a window as a 422 (the input's fault), its dead engine as a 503;
    anything else as it is (a 500)."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return Unavailable(f"the vLLM engine has stopped: {exc}")
    if isinstance(exc, VLLMClientError):
        return InvalidRequest(f"vLLM refused the window: {exc}")
    return exc


def convert_output(item: ForwardItem, output: Any) -> ForwardResult:
    """vLLM's per-position dicts {token id: Logprob(logprob, rank, decoded_token)} as our
    arrays: the target's logprob and rank, and the top_k alternatives best first."""
    k = item.top_k
    positions = range(item.score_from, len(item.input_ids))
    n = len(positions)
    logprobs = np.zeros(n, dtype=np.float32)
    ranks = np.zeros(n, dtype=np.int64)
    top_ids = np.zeros((n, k), dtype=np.int64)
    top_lps = np.zeros((n, k), dtype=np.float32)
    for row, p in enumerate(positions):
        entries = output.prompt_logprobs[p]
        target = entries[item.input_ids[p]]
        logprobs[row] = target.logprob
        ranks[row] = target.rank
        top_ids[row], top_lps[row] = _top(entries, k)
    result = ForwardResult(logprobs, ranks, top_ids, top_lps)
    if item.next_token:
        sample = output.outputs[0]
        entries = sample.logprobs[0] if sample.logprobs else {}
        if k == 0 or not entries:
            token = sample.token_ids[0]
            if token not in entries:  # logprobs=0 returns the sampled token's own
                raise RuntimeError("vLLM returned no logprob for the generated token")
            lp = entries[token].logprob
            ids, lps = np.array([token], dtype=np.int64), np.array([lp], dtype=np.float32)
        else:
            ids, lps = _top(entries, k)
        result = ForwardResult(logprobs, ranks, top_ids, top_lps, ids, lps)
    return result


def _top(entries: dict[int, Any], k: int) -> tuple[np.ndarray, np.ndarray]:
    best = sorted(
        ((token, lp) for token, lp in entries.items() if lp.rank is not None and lp.rank <= k),
        key=lambda pair: pair[1].rank,
    )[:k]
    ids = np.zeros(k, dtype=np.int64)
    lps = np.zeros(k, dtype=np.float32)
    for i, (token, lp) in enumerate(best):
        ids[i], lps[i] = token, lp.logprob
    return ids, lps
