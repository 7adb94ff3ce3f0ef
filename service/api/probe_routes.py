"""Routes for operators: liveness, readiness and the Prometheus scrape.

The probes are always open; ``/metrics`` is guarded only with ``--protect-metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api.deps import EngineDep
from service.api.errors_http import error_response, error_responses
from service.errors import Unavailable


def install(app: FastAPI, metrics_guard: Sequence[Depends]) -> None:
    """Register the probes (always open) and ``/metrics`` behind ``metrics_guard``."""
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], response_model=None, responses=error_responses((503,))
    )
    app.add_api_route(
        "/metrics",
        prometheus_metrics,
        methods=["GET"],
        name="metrics",  # the name request metrics leave out (a scrape is not a request)
        dependencies=list(metrics_guard),
        response_class=PlainTextResponse,  # the document's type; the body is Prometheus text
        responses=error_responses((401,)) if metrics_guard else None,
    )


async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


async def readyz(engine: EngineDep) -> JSONResponse | dict[str, str]:
    """200 once every model is loaded and warmed up; 503 while loading or draining."""
    if engine.draining:
        return error_response(Unavailable("the server is shutting down"))
    if not engine.ready:
        return error_response(Unavailable("models are loading"))
    return {"status": "ready"}


async def prometheus_metrics() -> Response:
    """Prometheus text exposition of every lmscore_* metric."""
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
