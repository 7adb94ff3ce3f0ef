"""The real server over HTTP: probes, models, context handling, errors that leave it healthy."""

from __future__ import annotations

import httpx
import pytest
from corpus import ENGLISH
from server_process import CONTEXT

pytestmark = pytest.mark.integration

LONG = " ".join(ENGLISH * 12)


def test_probes_and_models(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == "default" and card["backend"] == "transformers"
    assert card["dtype"] == "float32" and card["device"] == "cpu"
    assert card["max_context"] == CONTEXT
    assert card["revision"].startswith("sha256:") and len(card["revision"]) == 7 + 64
    assert http.get("/openapi.json").status_code == 200
    assert http.get("/docs").status_code == 200


def test_response_names_model_and_revision(http: httpx.Client) -> None:
    body = http.post("/v1/score/text", json={"texts": ["Hello there."]}).json()
    revision = http.get("/v1/models").json()["data"][0]["revision"]
    assert body["model"] == "default" and body["model_revision"] == revision
    assert body["usage"]["prompt_tokens"] == body["results"][0]["num_tokens"]


def test_over_context_modes(http: httpx.Client) -> None:
    error = http.post("/v1/score/text", json={"texts": ["short", LONG]})
    assert error.status_code == 422
    assert error.json()["error"]["param"] == "texts[1]"
    truncated = http.post("/v1/score/text", json={"texts": [LONG], "overflow": "truncate"}).json()
    result = truncated["results"][0]
    assert result["truncated"] is True and result["num_tokens"] == CONTEXT
    window = http.post(
        "/v1/score/text", json={"texts": [LONG], "overflow": "sliding_window", "stride": 512}
    ).json()["results"][0]
    assert window["truncated"] is False
    assert window["num_scored_tokens"] == window["num_tokens"] - 1 > CONTEXT
    # More context per token can only help on repetitive prose.
    assert window["mean_nll"] < result["mean_nll"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"texts": []}, 422, "texts"),
        ({"texts": ["ok", ""]}, 422, "texts[1]"),
        ({"texts": ["ok", 7]}, 422, "texts[1]"),
        ({"model": "nope", "texts": ["ok"]}, 404, "model"),
        ({"texts": ["ok"], "top_k": 21}, 422, "top_k"),
        ({"texts": ["ok"], "overflow": "wrap"}, 422, "overflow"),
        (
            {"conversations": [[{"role": "wizard", "content": "hi"}]]},
            422,
            "conversations[0][0].role",
        ),
        ({"conversations": [[]]}, 422, "conversations[0]"),
    ],
)
def test_bad_input_is_a_4xx_and_the_server_stays_healthy(
    http: httpx.Client, body: dict[str, object], status: int, param: str
) -> None:
    path = "/v1/score/chat" if "conversations" in body else "/v1/score/text"
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert http.post("/v1/score/text", json={"texts": ["Still fine."]}).status_code == 200


def test_unparseable_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/score/text", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    plain = http.post("/v1/score/text", content=b'{"texts": ["curl -d without a type"]}')
    assert plain.status_code == 200
