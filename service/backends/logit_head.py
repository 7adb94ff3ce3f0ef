"""What a model does to its LM head's output before the softmax, and a load-time check that
lmscore's own head reproduces the model's logits.

lmscore runs a model's body and its LM head separately (the head only on scored positions,
in vocabulary slices), so every step a ``ForCausalLM.forward`` applies between the two has
to be known here: a scale (Cohere multiplies by ``logit_scale``; Granite divides by
``logits_scaling``; HyperCLOVA X multiplies by it; Falcon-H1 by ``lm_head_multiplier``) and
a soft cap (Gemma 2 and later, RecurrentGemma). An architecture that does something else is
refused at load by ``check_head`` instead of being served wrong numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# float32 heads agree to rounding (~1e-6 of the largest logit); half-precision ones round
# each logit to ~0.4%. A missing scale or cap moves logits by whole percents or more.
FLOAT32_TOLERANCE = 1e-3
HALF_TOLERANCE = 2e-2


@dataclass(frozen=True)
class LogitTransform:
    """Logits are multiplied by ``scale``, then soft-capped as ``cap * tanh(logits / cap)``
    (each step only when set)."""

    scale: float | None = None
    softcap: float | None = None

    @classmethod
    def of(cls, config: Any) -> LogitTransform:
        """The transform a model's ``ForCausalLM.forward`` applies, from its config."""
        return cls(_scale(config), _softcap(config))


def _scale(config: Any) -> float | None:
    model_type = str(getattr(config, "model_type", ""))
    if model_type.startswith("granite"):
        scale = 1.0 / float(config.logits_scaling)
    elif model_type == "hyperclovax":
        scale = float(config.logits_scaling)
    elif model_type == "falcon_h1":
        scale = float(config.lm_head_multiplier)
    else:
        scale = float(getattr(config, "logit_scale", None) or 1.0)
    return None if scale == 1.0 else scale


def _softcap(config: Any) -> float | None:
    for name in ("final_logit_softcapping", "logits_soft_cap"):
        cap = getattr(config, name, None)
        if cap:
            return float(cap)
    return None


def check_head(
    model: Any,
    input_ids: torch.Tensor,
    hidden: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    exact: bool,
) -> None:
    """Raise unless ``project(hidden)`` (lmscore's head on the body's final hidden states of
    ``input_ids``, [1, T]) equals the model's own logits for them: within 1e-3 of the largest
    logit when ``exact`` (float32), 2e-2 otherwise."""
    want = model(input_ids=input_ids, use_cache=False).logits[0].float()
    got = project(hidden).float()
    name = type(model).__name__
    if got.shape != want.shape:
        raise RuntimeError(
            f"{name}: the model's logits have shape {tuple(want.shape)} where lmscore's LM "
            f"head gives {tuple(got.shape)}; this architecture is not supported"
        )
    worst = float((got - want).abs().max())
    limit = (FLOAT32_TOLERANCE if exact else HALF_TOLERANCE) * max(1.0, float(want.abs().max()))
    if not worst <= limit:
        raise RuntimeError(
            f"{name}: lmscore's LM head differs from the model's own logits by up to "
            f"{worst:.3g} (allowed {limit:.3g}); this architecture transforms its logits in "
            "a way lmscore does not know, so it is not served"
        )
