"""The registry of served models: load and warm up, look up, refuse while loading or
draining, close. Requests never reach a model that is not ready."""

from __future__ import annotations

import asyncio
import logging
import time

from service import metrics
from service.backends import load_scheduler
from service.batching.scheduler import Scheduler
from service.errors import InvalidRequest, NotFound, Unavailable
from service.models import ModelSpec, resolve
from service.schemas import ModelCard, ModelList
from service.served import ServedModel
from service.settings import Settings
from service.tasks import on_own_thread

log = logging.getLogger(__name__)


class ModelRegistry:
    """Models by name, and whether the server takes work (``ready``, not ``draining``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.expected: set[str] = set()
        self._ready = False
        self._draining = False
        self._publish()

    @property
    def ready(self) -> bool:
        """Every model loaded and warmed up."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        self._publish()

    @property
    def draining(self) -> bool:
        """Shutting down: new work is refused."""
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self._publish()

    def _publish(self) -> None:
        """``lmscore_ready``: 1 while the server takes work."""
        metrics.READY.set(float(self._ready and not self._draining))

    async def load(self, specs: list[ModelSpec]) -> None:
        """Resolve, load and warm up every model (off the event loop). Does not mark the
        registry ready: the caller does once everything else it needs is checked."""
        self.expected = {spec.name for spec in specs}
        for spec in specs:
            started = time.perf_counter()
            resolved = await on_own_thread(
                f"resolve-{spec.name}", resolve, spec, self.settings.cache_dir
            )
            settings = self.settings.for_model(dict(spec.options))
            scheduler = await on_own_thread(f"load-{spec.name}", load_scheduler, resolved, settings)
            await scheduler.warmup()
            served = self.add(spec.name, resolved.revision, scheduler)
            await asyncio.to_thread(served.read_vocabulary)
            metrics.QUEUE_CAPACITY.labels(spec.name).set(settings.max_queue)
            info = scheduler.backend.info
            log.info(
                "model %s loaded from %s (%s, %s, %s, context %d) in %.1f s",
                spec.name,
                resolved.path,
                info.backend,
                info.dtype,
                info.device,
                info.max_context,
                time.perf_counter() - started,
            )
            if info.dtype != "float32":
                log.warning(
                    "model %s scores in %s: PPL moves by up to several percent from float32 "
                    "on short texts; serve it with ?dtype=float32 (or --dtype float32) for "
                    "reference numbers",
                    spec.name,
                    info.dtype,
                )

    def add(self, name: str, revision: str, scheduler: Scheduler) -> ServedModel:
        """Serve a loaded model under ``name``."""
        served = ServedModel(name, revision, scheduler)
        self.models[name] = served
        info = scheduler.backend.info
        metrics.MODEL_INFO.labels(name, info.backend, info.dtype, info.device, revision).set(1)
        metrics.start_model_series(name)
        return served

    def get(self, name: str | None) -> ServedModel:
        """A served, ready model (NotFound, or Unavailable while loading or draining).
        No name, or an empty one (a request that names no model; vLLM takes "" so too),
        means ``default_name``."""
        name = name or self.default_name()
        if self.draining:
            raise Unavailable("the server is shutting down")
        model = self.models.get(name)
        if model is not None and self.ready:
            return model
        if model is not None or name in self.expected:
            raise Unavailable(f"model {name!r} is still loading", param="model")
        raise NotFound(
            f"unknown model {name!r}; served: {', '.join(sorted(self.models)) or 'none'}",
            param="model",
        )

    def default_name(self) -> str:
        """The model a request gets when it names none: the one called ``default``, else
        the only one served (as vLLM serves one model and lets requests omit it)."""
        names = self.expected | set(self.models)
        if "default" in names or not names:
            return "default"
        if len(names) == 1:
            return next(iter(names))
        raise InvalidRequest(
            f"this server holds several models ({', '.join(sorted(names))}) and none is "
            "called 'default': name one in the request's model field",
            param="model",
        )

    def list_models(self) -> ModelList:
        return ModelList(data=[m.card() for m in self.models.values()])

    def card(self, name: str) -> ModelCard:
        """The card of the model named ``name``, as listed (NotFound for an unknown name)."""
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"unknown model {name!r}; served: {served}", param="model")
        return model.card()

    async def close(self, wait_s: float = 30.0) -> None:
        """Fail whatever still waits, stop every model's workers, release the models
        (waiting at most ``wait_s`` per model for a forward pass in flight)."""
        for model in self.models.values():
            await model.scheduler.close(wait_s)
            model.prep.shutdown(wait=False, cancel_futures=True)
