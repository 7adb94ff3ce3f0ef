"""Which served model a request gets when it names none."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeSelfBatchingBackend

from service.backends import pass_through
from service.errors import InvalidRequest, NotFound
from service.metrics import REGISTRY
from service.registry import ModelRegistry
from service.settings import Settings


def registry_expecting(*names: str) -> ModelRegistry:
    registry = ModelRegistry(Settings())
    registry.expected = set(names)
    return registry


@pytest.mark.parametrize(
    ("served", "chosen"),
    [(("default",), "default"), (("smol", "default"), "default"), (("smol",), "smol")],
)
def test_an_unnamed_request_gets_default_else_the_only_model(
    served: tuple[str, ...], chosen: str
) -> None:
    assert registry_expecting(*served).default_name() == chosen


def test_several_models_without_a_default_must_be_named() -> None:
    with pytest.raises(InvalidRequest) as caught:
        registry_expecting("a", "b").default_name()
    assert caught.value.param == "model"
    assert "a, b" in str(caught.value)


def test_a_named_model_that_is_not_served_is_not_found() -> None:
    with pytest.raises(NotFound):
        registry_expecting("smol").get("default")


def test_a_served_model_has_its_series_at_zero_before_any_request(tokenizer: Any) -> None:
    # They appeared only with the first request: dashboards read "no data" after a restart.
    registry = ModelRegistry(Settings())
    backend = FakeSelfBatchingBackend(tokenizer)
    registry.add("series-at-zero", "sha256:x", pass_through(backend, "series-at-zero", Settings()))
    model = {"model": "series-at-zero"}
    assert REGISTRY.get_sample_value("lmscore_tokens_scored_total", model) == 0.0
    assert REGISTRY.get_sample_value("lmscore_inference_duration_seconds_count", model) == 0.0
    assert REGISTRY.get_sample_value("lmscore_batch_size_count", model) == 0.0
    dropped = {**model, "reason": "expired"}
    assert REGISTRY.get_sample_value("lmscore_batch_items_dropped_total", dropped) == 0.0
