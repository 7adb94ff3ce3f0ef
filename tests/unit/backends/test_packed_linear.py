"""Linear weights packed for oneDNN (``--pack-weights``): when they are packed, that a packed
layer computes ``F.linear`` (to bf16 rounding), that packing and restoring swap exactly the
plain ``nn.Linear`` layers, and that a bf16 backend's scores with packed weights match its
scores without them within bf16's own batch-to-batch spread; float32 is never packed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.backends import packed_linear
from service.backends.base import ForwardItem
from service.backends.compiled import decoder_layers
from service.backends.hf import HFBackend
from service.backends.packed_linear import PackedLayers, PackedLinear, packing_refusal

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_bf16_kernels = pytest.mark.skipif(
    packing_refusal("auto", CPU, torch.bfloat16) is not None,
    reason=f"no packing here: {packing_refusal('auto', CPU, torch.bfloat16)}",
)
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Grüße aus München! " * 3,
    "Привет мир, как дела? 😀 hello world",
    "日本語 🚀 123 4567",
    "ok",
]


def test_when_weights_are_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert packing_refusal("off", CPU, torch.bfloat16) == "packing is off"
    assert "for CPU" in str(packing_refusal("auto", CUDA, torch.bfloat16))
    assert "only bfloat16" in str(packing_refusal("auto", CPU, torch.float32))
    assert "only bfloat16" in str(packing_refusal("auto", CPU, torch.float16))
    with pytest.raises(ValueError, match="pack_weights must be one of"):
        packing_refusal("on", CPU, torch.bfloat16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert "no bf16 kernels" in str(packing_refusal("auto", CPU, torch.bfloat16))


@needs_bf16_kernels
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(0, 48), (5, 48), (1, 37, 48), (2, 3, 48)])
def test_a_packed_layer_computes_the_linear_map(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    packed = PackedLinear(linear)
    with torch.inference_mode():
        got, want = packed(x), F.linear(x, linear.weight, linear.bias)
        exact = F.linear(x.double(), linear.weight.double(), _double(linear.bias))
    assert got.shape == want.shape == (*shape[:-1], 80)
    assert got.dtype == torch.bfloat16
    if exact.numel() == 0:
        return
    # Both round a float32 sum to bf16 (8 bits of mantissa): within 2 of its ulps.
    scale = float(exact.abs().max())
    assert float((got.double() - exact).abs().max()) <= 2 * 2**-8 * scale
    assert float((got.double() - want.double()).abs().max()) <= 2 * 2**-8 * scale


def _double(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.double()


@needs_bf16_kernels
def test_packing_swaps_every_plain_linear_and_restoring_puts_them_back(
    tiny_model_dir: Path,
) -> None:
    backend = HFBackend(tiny_model_dir, dtype="bfloat16", device="cpu", pack_weights="off")
    layers = decoder_layers(backend.model)
    plain = {name: m for name, m in backend.model.named_modules() if type(m) is torch.nn.Linear}
    in_layers = [n for n in plain if n.startswith("model.layers.")]
    packed = PackedLayers(layers)
    assert packed.count == len(in_layers) == 7 * len(layers)  # q k v o, gate up down
    now = dict(backend.model.named_modules())
    assert all(isinstance(now[n], PackedLinear) for n in in_layers)
    assert type(now["lm_head"]) is torch.nn.Linear  # the head is projected in slices
    packed.restore()
    assert all(dict(backend.model.named_modules())[n] is plain[n] for n in in_layers)


def _scores(backend: HFBackend, tokenizer_texts: list[str]) -> list[np.ndarray]:
    ids = [tuple(backend.tokenizer.encode(t, add_special_tokens=False)) for t in tokenizer_texts]
    return [r.logprobs for r in backend.forward([ForwardItem(i, 1) for i in ids])]


@needs_bf16_kernels
@pytest.mark.parametrize("attention", ["ragged", "padded"])
def test_bf16_scores_with_packed_weights_match_plain_ones(
    tiny_model_dir: Path, attention: str
) -> None:
    packed = HFBackend(tiny_model_dir, dtype="bfloat16", device="cpu", attention=attention)
    plain = HFBackend(
        tiny_model_dir, dtype="bfloat16", device="cpu", attention=attention, pack_weights="off"
    )
    assert packed.packed_layers == 7 * len(decoder_layers(packed.model))
    assert plain.packed_layers == 0
    together = _scores(packed, TEXTS)
    alone = [_scores(plain, [text])[0] for text in TEXTS]
    batched_plain = _scores(plain, TEXTS)
    for got, want, spread in zip(together, alone, batched_plain, strict=True):
        # bf16 moves a score with the batch it runs in (another GEMM blocking rounds
        # differently); packed weights may move it by as much, or by two bf16 ulps of the
        # largest score, not more.
        ulp = 2**-8 * float(np.abs(want).max())
        allowed = 2 * max(float(np.abs(spread - want).max()), ulp)
        np.testing.assert_allclose(got, want, rtol=0, atol=allowed)


def test_float32_weights_are_never_packed(tiny_model_dir: Path) -> None:
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    assert backend.packed_layers == 0
    assert not any(isinstance(m, PackedLinear) for m in backend.model.modules())


@needs_bf16_kernels
def test_packed_weights_whose_probe_moves_are_put_back(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        packed_linear.PackedLinear,
        "forward",
        lambda self, hidden: torch.zeros(*hidden.shape[:-1], self.out_features).to(hidden),
    )
    with caplog.at_level(logging.WARNING, logger="service.backends.packed_linear"):
        backend = HFBackend(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert backend.packed_layers == 0
    assert not any(isinstance(m, PackedLinear) for m in backend.model.modules())
    assert "linear weights not packed: a probe's logits moved by" in caplog.text


@needs_bf16_kernels
def test_packed_weights_whose_probe_fails_are_put_back(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: PackedLinear, hidden: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(packed_linear.PackedLinear, "forward", refuse)
    with caplog.at_level(logging.WARNING, logger="service.backends.packed_linear"):
        backend = HFBackend(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert backend.packed_layers == 0
    assert "linear weights not packed: RuntimeError: no kernel for this shape" in caplog.text
    assert len(_scores(backend, TEXTS[:1])[0]) > 0
