"""A body traced by TorchScript (``--trace-body``): when it is traced, that its float32
scores equal the eager body's and plain transformers' within the contract's tolerance on
batches of shapes the trace never saw, that the scripted attention loop equals the Python
one, and that what a trace cannot take (token trees, sliding windows, a probe that moves)
runs eagerly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from tolerances import BATCH_INVARIANCE_REL, batch_invariance_atol

from service.backends import traced_body
from service.backends.base import ForwardItem
from service.backends.hf import HFBackend
from service.backends.ragged import RaggedBatch
from service.backends.scripted_windows import causal_windows, scripted_windows, traced_windows
from service.backends.traced_body import rope_type, tracing_refusal

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PLAIN = SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 1e4})
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Grüße aus München! " * 3,
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567",
    "ok",
]
needs_torchscript = pytest.mark.skipif(
    scripted_windows() is None, reason="TorchScript cannot compile the attention loop here"
)


def refusal(requested: str = "auto", device: torch.device = CPU, **kw: object) -> str | None:
    options: dict[str, object] = {"ragged": True, "compiled": False, "autocast": False}
    options.update(kw)
    return tracing_refusal(requested, device, config=options.pop("config", PLAIN), **options)  # type: ignore[arg-type]


def test_when_a_body_is_traced() -> None:
    assert refusal() is None
    assert refusal("off") == "tracing is off"
    assert "CPU only" in str(refusal(device=CUDA))
    assert "ragged" in str(refusal(ragged=False))
    assert "compiled" in str(refusal(compiled=True))
    assert "autocast" in str(refusal(autocast=True))
    dynamic = SimpleNamespace(rope_scaling={"type": "dynamic", "factor": 2.0})
    assert "depend on the length" in str(refusal(config=dynamic))
    with pytest.raises(ValueError, match="trace_body must be one of"):
        refusal("on")


def test_the_rope_type_is_read_from_either_config_field() -> None:
    assert rope_type(PLAIN) == "default"
    assert rope_type(SimpleNamespace(rope_scaling={"rope_type": "longrope"})) == "longrope"
    assert rope_type(SimpleNamespace(rope_scaling=None)) is None
    assert rope_type(SimpleNamespace()) is None


@needs_torchscript
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_the_scripted_attention_loop_equals_the_python_one(kv_heads: int) -> None:
    torch.manual_seed(0)
    lengths = [1, 7, 30, 2]
    total = sum(lengths)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    q = torch.randn(1, 4, total, 16)
    k, v = torch.randn(1, kv_heads, total, 16), torch.randn(1, kv_heads, total, 16)
    scripted = scripted_windows()
    assert scripted is not None
    gqa = kv_heads != 4
    want = causal_windows(q, k, v, cu, None, gqa)
    assert torch.equal(scripted(q, k, v, cu, None, gqa), want)
    # Window by window, as one causal sequence each.
    start = 0
    for length in lengths:
        span = slice(start, start + length)
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, span], k[:, :, span], v[:, :, span], is_causal=True, enable_gqa=gqa
        )
        torch.testing.assert_close(want[:, span], alone.transpose(1, 2), rtol=1e-6, atol=1e-6)
        start += length


def test_attention_a_trace_cannot_take_is_refused() -> None:
    batch = RaggedBatch.of([(1, 2, 3), (4, 5)], CPU)
    q, kv = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(RuntimeError, match="sliding window"):
        traced_windows(q, kv, kv, batch, None, sliding=4, plain_scores=True)
    with pytest.raises(RuntimeError, match="score extras"):
        traced_windows(q, kv, kv, batch, None, sliding=None, plain_scores=False)
    with pytest.raises(RuntimeError, match="no ragged batch"):
        traced_windows(q, kv, kv, None, None, sliding=None, plain_scores=True)
    tree = RaggedBatch.of([(1, 2, 3)], CPU, [(-1, 0, 0)])
    with pytest.raises(RuntimeError, match="token trees"):
        traced_windows(q[:, :, :3], kv[:, :, :3], kv[:, :, :3], tree, None, None, True)


@pytest.fixture(scope="module")
def token_ids(tokenizer: Any) -> list[list[int]]:
    return [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]


def _scores(backend: HFBackend, ids: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [r.logprobs for r in backend.forward([ForwardItem(i, 1) for i in ids])]


@needs_torchscript
def test_traced_float32_scores_equal_eager_and_plain_transformers(
    tiny_model_dir: Path,
    token_ids: list[list[int]],
    reference_logprobs: Callable[[list[int]], np.ndarray],
) -> None:
    traced = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    eager = HFBackend(tiny_model_dir, dtype="float32", device="cpu", trace_body="off")
    assert traced.traced is not None and eager.traced is None
    windows = [tuple(ids) for ids in token_ids]
    long = tuple(t for ids in token_ids for t in ids)[:120]
    batches = [windows, [long, windows[0][:2]], [windows[1]], [*windows, long, long[:3]]]
    for batch in batches:
        got, want = _scores(traced, batch), _scores(eager, batch)
        for ids, g, w in zip(batch, got, want, strict=True):
            np.testing.assert_allclose(
                g, w, rtol=BATCH_INVARIANCE_REL, atol=batch_invariance_atol(w)
            )
            ref = reference_logprobs(list(ids))[np.arange(len(ids) - 1), list(ids[1:])]
            assert np.max(np.abs(g - ref)) <= 1e-4


@needs_torchscript
def test_token_trees_run_eagerly_beside_a_traced_body(tiny_model_dir: Path) -> None:
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.traced is not None
    tree = RaggedBatch.of([(5, 6, 7)], CPU, [(-1, 0, 0)])
    with pytest.raises(ValueError, match="token trees run eagerly"):
        backend.traced(tree)
    ids = (5, 6, 7, 8)
    chain = ForwardItem(ids, 1, parents=(-1, 0, 1, 2))  # a tree that is one branch
    (as_tree,), (plain,) = backend.forward([chain]), backend.forward([ForwardItem(ids, 1)])
    np.testing.assert_allclose(as_tree.logprobs, plain.logprobs, rtol=BATCH_INVARIANCE_REL)


@needs_torchscript
def test_a_traced_body_whose_probe_moves_runs_eagerly(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = traced_body.TracedBody.__call__
    monkeypatch.setattr(
        traced_body.TracedBody, "__call__", lambda self, batch: real(self, batch) + 1.0
    )
    with caplog.at_level(logging.WARNING, logger="service.backends.traced_body"):
        backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.traced is None
    assert "body not traced: a probe moved by" in caplog.text


def test_a_body_that_cannot_be_traced_runs_eagerly(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: object, body: object, example: object) -> None:
        raise RuntimeError("the body cannot be traced: its attention has a sliding window")

    monkeypatch.setattr(traced_body.TracedBody, "__init__", refuse)
    with caplog.at_level(logging.WARNING, logger="service.backends.traced_body"):
        backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.traced is None
    assert "body not traced: RuntimeError: the body cannot be traced" in caplog.text
    assert len(_scores(backend, [(5, 6, 7)])[0]) == 2
