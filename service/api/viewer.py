"""The viewer door: ``GET /`` serves a self-contained page (HTML, CSS, a little JavaScript,
shipped in the package) that scores text through the public REST API and colours each
token by its surprisal. Nothing here scores: the page calls ``/v1/...`` like any client."""

from __future__ import annotations

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


def install_viewer(app: FastAPI) -> None:
    """``GET /`` (the page) and ``GET /viewer/{viewer.js,viewer.css}``; open without a key
    (the page holds no data; its API calls carry the key the user types)."""
    headers = {"content-security-policy": _CSP, "x-content-type-options": "nosniff"}
    assets = {name: (_STATIC / name).read_bytes() for name in _TYPES}
    page = (_STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def viewer_page() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get("/viewer/{name}", include_in_schema=False)
    async def viewer_asset(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"no viewer file {name!r}")
        return Response(assets[name], media_type=_TYPES[name], headers=headers)
