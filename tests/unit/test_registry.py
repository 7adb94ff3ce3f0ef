"""Which served model a request gets when it names none."""

from __future__ import annotations

import threading
from pathlib import Path
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


@pytest.mark.parametrize("unnamed", [None, ""])
def test_an_empty_model_name_gets_the_default_model(tokenizer: Any, unnamed: str | None) -> None:
    # vLLM serves "" as the default model; lmscore answered 404 "unknown model ''".
    registry = ModelRegistry(Settings())
    backend = FakeSelfBatchingBackend(tokenizer)
    served = registry.add("default", "sha256:x", pass_through(backend, "default", Settings()))
    registry.ready = True
    assert registry.get(unnamed) is served


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


async def test_loading_reads_the_vocabulary_off_the_event_loop(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request used to read the whole vocabulary (``get_vocab``) on the loop."""
    from service import registry as registry_module
    from service.models import ModelSpec, ResolvedModel

    loop_thread = threading.current_thread()
    read_in: list[threading.Thread] = []

    class WatchedTokenizer:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def __len__(self) -> int:
            return len(self._inner)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._inner(*args, **kwargs)

        def get_vocab(self) -> dict[str, int]:
            read_in.append(threading.current_thread())
            return dict(self._inner.get_vocab())

    backend = FakeSelfBatchingBackend(WatchedTokenizer(tokenizer))
    resolved = ResolvedModel("vocabulary-read", Path("unused"), "sha256:x")
    monkeypatch.setattr(registry_module, "resolve", lambda spec, cache: resolved)
    monkeypatch.setattr(
        registry_module,
        "load_scheduler",
        lambda model, settings: pass_through(backend, "vocabulary-read", settings),
    )
    registry = ModelRegistry(Settings())
    await registry.load([ModelSpec("vocabulary-read", "unused")])
    served = registry.models["vocabulary-read"]
    assert "tokenizer_ids" in vars(served) and "special_ids" in vars(served)
    assert read_in and loop_thread not in read_in
    await registry.close()


async def test_loading_and_warming_up_leave_no_thread_behind_but_the_forward_thread(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's OpenMP runtime keeps a worker pool for every thread that ever ran parallel
    work, and more pools than CPUs slow every forward pass (``service.tasks``): the threads
    that resolve, load and warm up a model have ended once it is served, and batches then
    run on the one forward thread."""
    from fakes import FakeBatchedBackend

    from service import registry as registry_module
    from service.backends import dynamic_batcher
    from service.backends.base import ForwardItem
    from service.models import ModelSpec, ResolvedModel

    ran_on: dict[str, threading.Thread] = {}

    class WatchedBackend(FakeBatchedBackend):
        def __init__(self) -> None:
            ran_on["load"] = threading.current_thread()
            super().__init__(tokenizer)

        def warmup(self) -> None:
            ran_on["warmup"] = threading.current_thread()

        def forward(self, items: list[ForwardItem], lane: int | None = None) -> Any:
            ran_on["forward"] = threading.current_thread()
            return super().forward(items, lane)

    def resolve(spec: ModelSpec, cache: Any) -> ResolvedModel:
        ran_on["resolve"] = threading.current_thread()
        return ResolvedModel("threads", Path("unused"), "sha256:x")

    monkeypatch.setattr(registry_module, "resolve", resolve)
    monkeypatch.setattr(
        registry_module,
        "load_scheduler",
        lambda model, settings: dynamic_batcher(WatchedBackend(), model.name, settings),
    )
    registry = ModelRegistry(Settings())
    await registry.load([ModelSpec("threads", "unused")])
    one_off = [ran_on["resolve"], ran_on["load"], ran_on["warmup"]]
    assert threading.current_thread() not in one_off
    assert not any(thread.is_alive() for thread in one_off)
    await registry.models["threads"].scheduler.submit([ForwardItem((1, 2, 3), 1)])
    assert ran_on["forward"].is_alive() and ran_on["forward"] not in one_off
    await registry.close()
