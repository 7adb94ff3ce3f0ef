"""calibrate -> ``lmscore serve --reference`` -> percentile/is_outlier: the server's
percentiles agree with ``lmscore_client.profile`` (the same formula, written twice). The
second server also requires an API key, which every client must send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import read_jsonl, run_cli, write_jsonl
from server_process import RunningServer, start_server, stop_server
from tolerances import BATCH_INVARIANCE_REL

from lmscore_client import Client, GrpcClient, LMScoreError, UnauthorizedError
from lmscore_client.profile import is_outlier, percentile

REFERENCE = [f"{s} {w}." for s in ("The cat sat on the", "We walked to the", "She opened the")
             for w in ("mat", "door", "park", "river", "window", "garden", "station", "book",
                       "kitchen", "market", "hill", "box")]  # fmt: skip
KEY = "client-test-key"
PROBES = ["The dog sat on the rug.", "Der Hund sitzt auf dem Teppich.", "qz xv kk pp 88 //",
          "We walked to the lake.", "Hi"]  # fmt: skip


@pytest.fixture(scope="module")
def profile_path(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("reference")
    inp = write_jsonl(work / "ref.jsonl", [{"text": t} for t in REFERENCE])
    path = work / "profile.json"
    done = run_cli("calibrate", str(inp), "-o", str(path), "--url", server.url)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def ref_server(profile_path: Path) -> Iterator[RunningServer]:
    log = profile_path.with_name("server.log")
    keys = profile_path.with_name("keys.txt")
    keys.write_text(f"# test keys\n{KEY}\n")
    args = [
        "--dtype",
        "float32",
        "--reference",
        f"ref={profile_path}",
        "--api-keys-file",
        str(keys),
    ]
    running = start_server(args, log)
    yield running
    stop_server(running)


def test_server_percentiles_match_the_client_formula(
    ref_server: RunningServer, profile_path: Path
) -> None:
    profile = json.loads(profile_path.read_text())
    with (
        Client(ref_server.url, api_key=KEY) as client,
        GrpcClient(ref_server.grpc, api_key=KEY) as grpc_client,
    ):
        rest = client.score_text(PROBES, reference="ref").results
        via_grpc = grpc_client.score_text(PROBES, reference="ref").results
        plain = client.score_text(PROBES).results
    for r, g, p in zip(rest, via_grpc, plain, strict=True):
        assert p.percentile is None and p.is_outlier is None
        if r.bits_per_char is None:  # "Hi": one token, nothing scored
            assert r.percentile is None and r.is_outlier is None and g.percentile is None
            continue
        assert r.percentile == pytest.approx(percentile(profile, r.bits_per_char), abs=1e-6)
        assert r.is_outlier == is_outlier(profile, r.bits_per_char)
        # gRPC and REST are two requests: bits_per_char may differ by the contract's batch
        # tolerance, and the percentile by as much as that moves it along the profile.
        bpc = r.bits_per_char
        spread = percentile(profile, bpc * (1 + BATCH_INVARIANCE_REL)) - percentile(
            profile, bpc * (1 - BATCH_INVARIANCE_REL)
        )
        assert g.percentile == pytest.approx(r.percentile, abs=spread + 1e-6)
        assert g.is_outlier == r.is_outlier
    assert rest[2].is_outlier and rest[2].percentile == 100.0  # gibberish


def test_score_file_adds_percentile_and_outlier(ref_server: RunningServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in PROBES])
    out = tmp_path / "out.jsonl"
    done = run_cli("score-file", str(inp), "-o", str(out), "--url", ref_server.url,
                   "--reference", "ref", "--metric", "bits_per_char", "--api-key", KEY)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == PROBES
    assert all("percentile" in r and "is_outlier" in r for r in rows)
    assert rows[2]["is_outlier"] is True and rows[4]["percentile"] is None


def test_unknown_reference_stops_the_run(ref_server: RunningServer, tmp_path: Path) -> None:
    with Client(ref_server.url, api_key=KEY) as client, pytest.raises(LMScoreError) as info:
        client.score_text(PROBES, reference="nope")
    assert 400 <= info.value.status < 500
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in PROBES])
    done = run_cli("score-file", str(inp), "-o", str(tmp_path / "out.jsonl"),
                   "--url", ref_server.url, "--reference", "nope", "--api-key", KEY)  # fmt: skip
    assert done.returncode == 1
    assert "stopped" in done.stderr and "nope" in done.stderr
    assert not (tmp_path / "out.jsonl.rejects.jsonl").exists()  # not blamed on the rows


def test_api_key_is_required_and_sent(ref_server: RunningServer, tmp_path: Path) -> None:
    with (
        Client(ref_server.url, api_key="wrong") as client,
        pytest.raises(UnauthorizedError) as rest,
    ):
        client.score_text("a b")
    assert rest.value.status == 401 and rest.value.type == "unauthorized"
    wrong = GrpcClient(ref_server.grpc, api_key="wrong")
    with wrong, pytest.raises(UnauthorizedError) as via_grpc:
        wrong.score_text("a b")
    assert via_grpc.value.grpc_code == "UNAUTHENTICATED"
    with GrpcClient(ref_server.grpc, api_key=KEY) as grpc_client:
        assert grpc_client.score_text("a b").results[0].num_scored_tokens >= 1
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in PROBES])
    done = run_cli("score-file", str(inp), "-o", str(tmp_path / "out.jsonl"),
                   "--url", ref_server.url, "--api-key", "wrong")  # fmt: skip
    assert done.returncode == 1 and "401 unauthorized" in done.stderr
