"""Compiled decoder layers (``--compile``): when they are compiled, that compiled float32
scores equal eager ones within the contract's tolerance, that warm-up leaves nothing to
compile under requests, and that a compile failure falls back to eager for good."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tolerances import BATCH_INVARIANCE_REL, batch_invariance_atol

from service.backends import compiled
from service.backends.base import ForwardItem
from service.backends.compiled import CompiledLayers, compile_refusal, decoder_layers
from service.backends.hf import HFBackend

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TEXTS = [
    "a",
    "The quick brown fox jumps over the lazy dog. Grüße aus München! " * 3,
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567",
]
needs_compiler = pytest.mark.skipif(
    compiled.cpp_compiler() is None,
    reason="inductor needs a C++ compiler (g++, c++ or clang++) to compile for CPU",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = [pytest.param("cpu", marks=needs_compiler), pytest.param("cuda", marks=needs_cuda)]
"""CPU compiles C++ loops, CUDA Triton kernels: each is checked against its own eager run."""


def test_when_layers_are_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    assert compile_refusal("off", CPU, ragged=True) == "compile is off"
    assert compile_refusal("auto", CPU, ragged=True) is None
    assert compile_refusal("on", CPU, ragged=True) is None
    assert compile_refusal("on", CUDA, ragged=True) is None
    assert "CPU only" in str(compile_refusal("auto", CUDA, ragged=True))
    assert "ragged" in str(compile_refusal("on", CPU, ragged=False))
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: None)
    assert "C++ compiler" in str(compile_refusal("auto", CPU, ragged=True))
    assert "C++ compiler" in str(compile_refusal("on", CPU, ragged=True))
    with pytest.raises(ValueError, match="compile must be one of"):
        compile_refusal("yes", CPU, ragged=True)


def test_the_compiler_named_by_cxx_is_the_one_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert compiled.cpp_compiler() is None


def test_a_padded_model_is_not_compiled(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.backends.hf"):
        backend = HFBackend(
            tiny_model_dir, dtype="float32", device="cpu", attention="padded", compile_layers="on"
        )
    assert backend.compiled is None
    assert "decoder layers run eagerly: only ragged batches are compiled" in caplog.text


class Doubling(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class Refusing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad input")


def failing_compile(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("InductorError: no C++ compiler\nlong traceback")

    return run


def test_a_compile_failure_runs_every_layer_eagerly_for_good(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch, "compile", failing_compile)
    layers: list[torch.nn.Module] = [Doubling(), Doubling()]
    fallbacks: list[bool] = []
    layers_compiled = CompiledLayers(layers, on_fallback=lambda: fallbacks.append(True))
    x = torch.ones(3)
    with caplog.at_level(logging.WARNING, logger="service.backends.compiled"):
        assert torch.equal(layers[0](x), 2 * x)
    assert not layers_compiled.active
    assert layers_compiled.failure == "RuntimeError: InductorError: no C++ compiler"
    assert "running them eagerly: RuntimeError: InductorError" in caplog.text
    assert all("forward" not in vars(layer) for layer in layers)  # the class's own again
    assert torch.equal(layers[1](x), 2 * x)
    assert fallbacks == [True]


def test_a_backend_whose_layers_fail_to_compile_serves_eager_scores(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: Any
) -> None:
    """The model card says the layers are not compiled, and the scores are the eager ones
    (the same code path: equal to the last bit)."""
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    monkeypatch.setattr(torch, "compile", failing_compile)
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu", compile_layers="on")
    assert backend.compiled is not None and backend.compiled.active
    backend.warmup()
    assert not backend.compiled.active and not backend.info.compiled
    eager = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    item = ForwardItem(tuple(tokenizer.encode(TEXTS[2], add_special_tokens=False)), 1)
    assert np.array_equal(backend.forward([item])[0].logprobs, eager.forward([item])[0].logprobs)


def test_an_error_of_the_model_itself_is_raised_and_compiling_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch, "compile", failing_compile)
    layers: list[torch.nn.Module] = [Refusing()]
    layers_compiled = CompiledLayers(layers)
    with pytest.raises(ValueError, match="bad input"):
        layers[0](torch.ones(3))
    assert layers_compiled.active


@pytest.fixture(scope="module", params=DEVICES)
def eager_and_compiled(
    tiny_model_dir: Path, request: pytest.FixtureRequest
) -> tuple[HFBackend, HFBackend]:
    device = request.param
    eager = HFBackend(tiny_model_dir, dtype="float32", device=device)
    on = HFBackend(tiny_model_dir, dtype="float32", device=device, compile_layers="on")
    on.warmup()
    return eager, on


def test_compiled_layers_are_the_model_s_decoder_layers(
    eager_and_compiled: tuple[HFBackend, HFBackend],
) -> None:
    eager, on = eager_and_compiled
    assert eager.compiled is None and not eager.info.compiled
    assert on.compiled is not None and on.compiled.active and on.info.compiled
    assert on.compiled.layers == decoder_layers(on.model)
    assert [type(layer).__name__ for layer in on.compiled.layers] == ["LlamaDecoderLayer"] * 2


def test_compiled_float32_scores_equal_eager_ones(
    eager_and_compiled: tuple[HFBackend, HFBackend], tokenizer: Any
) -> None:
    """Windows of very different lengths in one batch and alone: compiled = eager within
    the contract's 1e-4 relative, and the top tokens agree."""
    eager, on = eager_and_compiled
    ids = [tuple(tokenizer.encode(t, add_special_tokens=False)) for t in TEXTS]
    items = [ForwardItem(i, 1, top_k=3, next_token=True) for i in ids]
    batched = on.forward(items)
    for item, got in zip(items, batched, strict=True):
        want = eager.forward([item])[0]
        alone = on.forward([item])[0]
        tol = batch_invariance_atol(want.logprobs)
        for result in (got, alone):
            np.testing.assert_allclose(
                result.logprobs, want.logprobs, rtol=BATCH_INVARIANCE_REL, atol=tol
            )
            np.testing.assert_allclose(result.next_top_logprobs, want.next_top_logprobs, atol=tol)
    assert on.compiled is not None and on.compiled.active


@pytest.mark.parametrize("device", DEVICES)
def test_warm_up_leaves_nothing_to_compile_under_requests(
    tiny_model_dir: Path, device: str
) -> None:
    """New window counts, new lengths and a one-token stream reuse the graphs warm-up
    compiled: a request never waits seconds for inductor."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # forget graphs other tests compiled for this model class
    on = HFBackend(tiny_model_dir, dtype="float32", device=device, compile_layers="on")
    on.warmup()
    before = counters["stats"]["unique_graphs"]
    assert before > 0
    shapes = [[2], [7, 3, 9, 2], [30], [1], [5] * 9, [11, 29]]
    for lengths in shapes:
        on.forward([ForwardItem(tuple(range(3, 3 + n)), 1, 1, next_token=True) for n in lengths])
    assert counters["stats"]["unique_graphs"] == before
