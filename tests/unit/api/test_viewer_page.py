"""``GET /`` serves the viewer page and its two files from the package, open without a
key, with a content security policy that keeps it to this origin."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from tiny_engines import asgi_client

from service.engine import Engine

ASYNC = pytest.mark.asyncio(loop_scope="session")


@ASYNC
async def test_page_and_assets_are_served_without_a_key(
    engine_factory: Callable[..., Engine],
) -> None:
    engine = engine_factory(api_keys=["secret"])
    async with asgi_client(engine) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for src in re.findall(r'(?:src|href)="(/viewer/[^"]+)"', page.text):
            asset = await client.get(src)
            assert asset.status_code == 200 and asset.content
        missing = await client.get("/viewer/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        scoring = await client.post("/v1/score/text", json={"texts": ["hi"]})
        assert scoring.status_code == 401  # the API itself still needs the key


def test_page_calls_only_public_api_routes() -> None:
    from importlib import resources

    script = (resources.files("service.api") / "static" / "viewer.js").read_text()
    paths = set(re.findall(r'"(/v1/[a-z/]+)"', script))
    assert paths == {"/v1/models", "/v1/references", "/v1/score/text", "/v1/score/chat"}
    assert "localStorage" not in script and "sessionStorage" not in script  # key in memory only
