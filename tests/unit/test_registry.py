"""Which served model a request gets when it names none."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest, NotFound
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
