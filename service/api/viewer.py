"""The viewer door: ``GET /`` serves a self-contained page (HTML, CSS, a little JavaScript,
shipped in the package) that scores text through the public REST API and colours each
token by its surprisal. Nothing here scores: the page calls ``/v1/...`` like any client."""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from service.errors import NotFound

_STATIC = resources.files("service.api") / "static"
_TYPES = {"viewer.js": "text/javascript; charset=utf-8", "viewer.css": "text/css; charset=utf-8"}
# The page loads only its own files and calls only this origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff"}


def install(app: FastAPI) -> None:
    """``GET /`` (the page) and ``GET /viewer/{viewer.js,viewer.css}``; open without a key
    (the page holds no data; its API calls carry the key the user types)."""
    app.add_api_route("/", viewer_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/viewer/{name}", viewer_asset, methods=["GET"], include_in_schema=False)


@functools.cache
def _page() -> str:
    return (_STATIC / "index.html").read_text(encoding="utf-8")


@functools.cache
def _asset(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


async def viewer_page() -> HTMLResponse:
    return HTMLResponse(_page(), headers=_HEADERS)


async def viewer_asset(name: str) -> Response:
    if name not in _TYPES:
        raise NotFound(f"no viewer file {name!r}")
    return Response(_asset(name), media_type=_TYPES[name], headers=_HEADERS)
