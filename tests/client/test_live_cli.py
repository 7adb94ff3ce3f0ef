"""``lmscore-client`` as a subprocess against the real server: 2000 rows in order with the
API's scores, rejects, the PPL band, kill -9 and --resume, and calibrate."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import CLI, CONTEXT, read_jsonl, run_cli, write_jsonl
from server_process import RunningServer
from tolerances import BATCH_INVARIANCE_REL, ppl_rel

from lmscore_client import Client, Distribution

# 2000 distinct three-word rows (three tokens each: cheap to score on two CPU cores).
A = ["Cats", "Dogs", "Birds", "Kids", "People", "Farmers", "Doctors", "Students", "Workers", "Artists"]  # fmt: skip
B = ["eat", "like", "want", "need", "see", "find", "make", "love", "buy", "sell"]
C = ["bread", "apples", "water", "books", "music", "cars", "flowers", "coffee", "houses", "shoes",
     "paper", "games", "fish", "rice", "tea", "art", "gold", "wood", "milk", "salt"]  # fmt: skip
N = 2000
FAST = ("--rows-per-request", "32", "--concurrency", "8")
FIELDS = ("ppl", "mean_nll", "bits_per_byte", "bits_per_char", "num_scored_tokens")


def _row(i: int) -> dict[str, Any]:
    return {"id": i, "text": f"{A[i % 10]} {B[(i // 10) % 10]} {C[i // 100]}"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows: list[Any] = [_row(i) for i in range(N)]
    rows[100] = {"id": 100, "text": ""}  # empty: 422
    rows[200] = {"id": 200, "content": "no text field"}  # missing field
    rows[300] = {"id": 300, "text": "word " * (CONTEXT + 10)}  # over the context: 422
    rows[400] = {"id": 400, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}  # fmt: skip
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "in.jsonl", rows)


REJECTED = {100, 200, 300}


@pytest.fixture(scope="module")
def full_run(server: RunningServer, corpus: Path) -> tuple[Path, str]:
    out = corpus.with_name("out.jsonl")
    started = time.monotonic()
    done = run_cli("score-file", str(corpus), "-o", str(out), "--url", server.url, *FAST)
    print(f"score-file of {N} rows: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr
    return out, done.stderr


def test_every_row_in_order_with_the_api_scores(
    full_run: tuple[Path, str], corpus: Path, server: RunningServer
) -> None:
    out, stderr = full_run
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(N))  # every row, refused ones included
    assert all(set(FIELDS) <= r.keys() for r in rows)
    for row in rows:
        refused = row["id"] in REJECTED
        assert ("score_error" in row) == refused
        assert (row["ppl"] is None) == refused
    by_id = {r["id"]: r for r in rows}
    sample = [0, 1, 99, 101, 555, 1234, 1999]
    with Client(server.url) as client:
        direct = client.score_text([_row(i)["text"] for i in sample]).results
        chat = client.score_chat([by_id[400]["messages"]]).results[0]
    # Other requests, other batch company: the contract's batch tolerance.
    rel = BATCH_INVARIANCE_REL
    for i, result in zip(sample, direct, strict=True):
        for name in FIELDS:
            tol = ppl_rel(result.ppl) if name == "ppl" else rel
            assert math.isclose(by_id[i][name], getattr(result, name), rel_tol=tol), (i, name)
    assert math.isclose(by_id[400]["ppl"], chat.ppl or 0.0, rel_tol=ppl_rel(chat.ppl))
    assert f"rows {N}, kept {N - 3}, dropped 0, rejected 3, errors 0" in stderr
    assert "ppl over" in stderr and "p50" in stderr and "histogram of ppl" in stderr


def test_refused_rows_go_to_rejects(full_run: tuple[Path, str]) -> None:
    out, _ = full_run
    rejects = {r["row"]["id"]: r for r in read_jsonl(Path(f"{out}.rejects.jsonl"))}
    assert set(rejects) == REJECTED
    assert rejects[100]["line"] == 101 and rejects[100]["error"]["status"] == 422
    assert rejects[100]["error"]["type"] == "invalid_request"
    assert rejects[200]["error"]["type"] == "missing_field"
    assert rejects[300]["error"]["status"] == 422
    assert "context" in rejects[300]["error"]["message"]


def test_ppl_band_keeps_the_rows_inside(
    full_run: tuple[Path, str], server: RunningServer, tmp_path: Path
) -> None:
    scored = [r for r in read_jsonl(full_run[0])[:150] if "score_error" not in r]
    inp = write_jsonl(tmp_path / "band.jsonl", [{"id": r["id"], "text": r["text"]} for r in scored if "text" in r])  # fmt: skip
    ppls = sorted({r["ppl"] for r in scored if "text" in r})
    low = (ppls[30] + ppls[31]) / 2  # between two distinct values: no rounding ties
    high = (ppls[100] + ppls[101]) / 2
    out = tmp_path / "band_out.jsonl"
    done = run_cli("score-file", str(inp), "-o", str(out), "--url", server.url,
                   "--min-ppl", str(low), "--max-ppl", str(high), *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = [r["id"] for r in scored if "text" in r and low <= r["ppl"] <= high]
    assert [r["id"] for r in read_jsonl(out)] == want
    assert f"kept {len(want)}, dropped {len(scored) - len(want)}" in done.stderr


def test_kill_then_resume_gives_the_uninterrupted_rows(
    full_run: tuple[Path, str], corpus: Path, server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "killed.jsonl"
    args = [CLI, "score-file", str(corpus), "-o", str(out), "--url", server.url, *FAST]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 300:
            break
        time.sleep(0.005)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed (a fast machine)")
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = out.read_bytes().count(b"\n")
    assert 300 <= written < N
    done = run_cli(*args[1:], "--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming after input line" in done.stderr
    resumed, full = read_jsonl(out), read_jsonl(full_run[0])
    assert [r["id"] for r in resumed] == [r["id"] for r in full]  # no duplicates, none missing
    for a, b in zip(resumed, full, strict=True):
        if b["ppl"] is None:  # a refused row: refused again, for the same reason
            assert a["ppl"] is None and a["score_error"]["type"] == b["score_error"]["type"]
        else:
            assert math.isclose(a["ppl"], b["ppl"], rel_tol=BATCH_INVARIANCE_REL)  # other runs
    rejects = read_jsonl(Path(f"{out}.rejects.jsonl"))
    assert sorted(r["row"]["id"] for r in rejects) == sorted(REJECTED)


def test_calibrate_writes_a_profile(
    server: RunningServer, http: httpx.Client, tmp_path: Path
) -> None:
    rows = [_row(i) for i in range(0, N, 7)] + [{"id": -1, "text": "Hello"}]  # one token: null
    inp = write_jsonl(tmp_path / "ref.jsonl", rows)
    path = tmp_path / "profile.json"
    done = run_cli("calibrate", str(inp), "-o", str(path), "--url", server.url, *FAST)
    assert done.returncode == 0, done.stderr
    profile = json.loads(path.read_text())
    card = http.get("/v1/models").json()["data"][0]
    assert profile["format"] == "lmscore.reference.v1"
    assert (profile["model"], profile["revision"]) == ("default", card["revision"])
    assert (profile["dtype"], profile["backend"]) == (card["dtype"], card["backend"])
    assert profile["metric"] == "bits_per_char"
    assert profile["count"] == len(rows) - 1 and profile["skipped"] == 1
    levels = [p for p, _ in profile["quantiles"]]
    values = [v for _, v in profile["quantiles"]]
    assert levels == [i / 100 for i in range(101)]
    assert values == sorted(values) and values[0] < values[-1]
    assert values[0] <= profile["threshold"] <= values[-1]
    assert profile["threshold"] == pytest.approx(values[99])
    assert profile["source"] == "ref.jsonl" and profile["created_at"].endswith("Z")


def test_fields_and_an_entropy_profile(server: RunningServer, tmp_path: Path) -> None:
    """--fields adds the full-distribution scores; calibrate on entropy per character."""
    rows = [_row(i) for i in range(0, 40, 3)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    done = run_cli(
        "score-file", str(source), "-o", str(out), "--url", server.url,
        "--fields", "entropy,min_k", "--min-k-percent", "50",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = read_jsonl(out)
    with Client(server.url) as client:
        asked = Distribution(entropy=True, min_k=True, min_k_percent=50)
        direct = client.score_text([r["text"] for r in rows], distribution=asked).results
    names = ("mean_entropy", "entropy_bits_per_char", "min_k_logprob", "min_k_plus_plus")
    for row, result in zip(scored, direct, strict=True):
        for name in names:
            assert math.isclose(row[name], getattr(result, name), rel_tol=BATCH_INVARIANCE_REL)
    bad = run_cli("score-file", str(source), "-o", str(out), "--url", server.url, "--fields", "x")
    assert bad.returncode == 2 and "unknown field group x" in bad.stderr
    profile_path = tmp_path / "profile.json"
    metric = ("--metric", "entropy_bits_per_char")
    calibrated = run_cli(
        "calibrate", str(source), "-o", str(profile_path), "--url", server.url, *metric
    )
    assert calibrated.returncode == 0, calibrated.stderr
    profile = json.loads(profile_path.read_text())
    assert profile["metric"] == "entropy_bits_per_char" and profile["count"] == len(rows)
    values = sorted(r.entropy_bits_per_char for r in direct)
    assert math.isclose(profile["quantiles"][0][1], values[0], rel_tol=BATCH_INVARIANCE_REL)
