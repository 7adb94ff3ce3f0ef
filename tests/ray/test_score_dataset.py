"""Scoring a Ray dataset remotely (two real servers, HTTP and gRPC) and in-process: every
row comes back in input order with the scores direct API calls give (float32, the
contract's batch-invariance tolerance), and refused rows carry their error."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import ray
from ray_helpers import CONTEXT, direct_scores, is_too_long
from server_process import RunningServer
from tolerances import BATCH_INVARIANCE_REL, ppl_rel

from lmscore_client import TextResult
from lmscore_client.ray import InProcess, RowFormat, Servers, score_dataset

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
ROWS = RowFormat(chat_field="messages")


def assert_matches(
    scored: list[dict[str, Any]], rows: list[dict[str, Any]], reference: dict[str, Any]
) -> None:
    assert [r["id"] for r in scored] == [r["id"] for r in rows]  # every row, in order
    for row in scored:
        expected: TextResult | None = reference[row["id"]]
        if expected is None:
            assert row["score_error"]["status"] == 422
            assert row["score_error"]["param"] == "text"
            assert row["ppl"] is None
            continue
        assert row["score_error"] is None
        assert row["num_scored_tokens"] == expected.num_scored_tokens
        assert row["sum_logprob"] == pytest.approx(expected.sum_logprob, rel=BATCH_INVARIANCE_REL)
        assert row["bits_per_char"] == pytest.approx(
            expected.bits_per_char, rel=BATCH_INVARIANCE_REL
        )
        if row.get("messages"):
            scored_messages = [m for m in row["message_scores"] if m["scored"]]
            assert [m["role"] for m in scored_messages] == ["assistant"]


def requests_served(server: RunningServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    pattern = (
        r'lmscore_requests_total\{code="200",endpoint="score_(?:text|chat)",protocol="http"\} (\S+)'
    )
    return sum(float(v) for v in re.findall(pattern, text))


def test_remote_over_two_servers_equals_direct_calls(
    servers: list[RunningServer], corpus: list[dict[str, Any]], reference: dict[str, Any]
) -> None:
    before = [requests_served(s) for s in servers]
    ds = ray.data.from_items(corpus, override_num_blocks=8)
    target = Servers([s.url for s in servers])
    scored = score_dataset(ds, target, rows=ROWS, actors=2, batch_size=128).take_all()
    assert len(scored) == len(corpus) >= 2000
    assert_matches(scored, corpus, reference)
    after = [requests_served(s) for s in servers]
    assert all(b > a for a, b in zip(before, after, strict=True))  # both servers took work


def test_remote_over_grpc(
    servers: list[RunningServer], corpus: list[dict[str, Any]], reference: dict[str, Any]
) -> None:
    rows = corpus[:300]
    target = Servers([s.grpc for s in servers], protocol="grpc")
    scored = score_dataset(ray.data.from_items(rows), target, rows=ROWS).take_all()
    assert_matches(scored, rows, reference)


def test_in_process_equals_direct_calls(
    corpus: list[dict[str, Any]], reference: dict[str, Any]
) -> None:
    target = InProcess({"dtype": "float32", "device": "cpu", "max_context": CONTEXT})
    ds = ray.data.from_items(corpus, override_num_blocks=4)
    scored = score_dataset(ds, target, rows=ROWS, batch_size=256).take_all()
    assert len(scored) == len(corpus)
    assert_matches(scored, corpus, reference)


def test_bad_rows_land_in_the_error_column(servers: list[RunningServer]) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "ok", "text": "A perfectly normal sentence.", "messages": None},
        {"id": "no-text", "text": None, "messages": None},
        {"id": "bad-chat", "text": None, "messages": [{"role": "wizard", "content": "hi"}]},
        {"id": "long", "text": "word " * 2000, "messages": None},
        {"id": "ok2", "text": "Another one.", "messages": None},
    ]
    scored = score_dataset(
        ray.data.from_items(rows), Servers([servers[0].url]), rows=ROWS
    ).take_all()
    errors = {r["id"]: r["score_error"] for r in scored}
    assert errors["ok"] is None and errors["ok2"] is None
    assert errors["no-text"]["type"] == "missing_field"
    assert errors["bad-chat"]["status"] == 422
    assert errors["long"]["status"] == 422
    direct = direct_scores(servers[0].url, [rows[0], rows[4]])
    assert scored[0]["ppl"] == pytest.approx(direct["ok"].ppl, rel=ppl_rel(direct["ok"].ppl))
    assert is_too_long({"text": rows[3]["text"]})
