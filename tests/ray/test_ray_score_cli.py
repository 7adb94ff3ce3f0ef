"""``lmscore-client ray-score`` as a user runs it: JSONL in, Parquet/JSONL shards out; a
run killed halfway (driver and workers) and resumed has every row exactly once, with Ray
Data's checkpointing and with our own skip-what-is-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from ray_helpers import corpus_rows, direct_scores
from server_process import RunningServer
from tolerances import BATCH_INVARIANCE_REL, ppl_rel

pytestmark = pytest.mark.ray
CLI = str(Path(sys.executable).with_name("lmscore-client"))


def write_inputs(folder: Path, rows: list[dict[str, Any]], files: int) -> None:
    folder.mkdir()
    per_file = -(-len(rows) // files)
    for index in range(files):
        with (folder / f"part{index}.jsonl").open("w") as f:
            for row in rows[index * per_file : (index + 1) * per_file]:
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")


def command(inputs: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        CLI,
        "ray-score",
        str(inputs / "*.jsonl"),
        "-o",
        str(out),
        "--url",
        url,
        "--chat-field",
        "messages",
        "--batch-size",
        "40",
        *extra,
    ]


def read_output(out: Path, fmt: str, *, complete_only: bool = False) -> list[dict[str, Any]]:
    """The rows in ``out``'s files. A run still going (or killed) may have a file half
    written: ``complete_only`` skips those, where otherwise reading one fails the test."""
    files = sorted(out.glob(f"*.{'parquet' if fmt == 'parquet' else 'json*'}"))
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            table = pq.read_table(path) if fmt == "parquet" else pa_json.read_json(path)
        except pa.ArrowInvalid:
            if complete_only:
                continue
            raise
        rows.extend(table.to_pylist())
    return rows


def run_killed_then_resumed(
    tmp_path: Path, url: str, fmt: str, checkpoint: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [r for r in corpus_rows(400, seed=3) if len(r.get("text") or "") < 1000]
    write_inputs(tmp_path / "in", rows, files=10)
    out = tmp_path / "out"
    args = command(tmp_path / "in", out, url, "--format", fmt, "--checkpoint", checkpoint)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if read_output(out, fmt, complete_only=True) if out.exists() else []:
            break
        time.sleep(0.2)
    finished = first.poll() is not None
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its local cluster's workers
    first.wait()
    # Ray Data writes in place, so the kill may leave a torn file; resuming removes it.
    partial = read_output(out, fmt, complete_only=True)
    if finished or len(partial) == len(rows):
        pytest.skip("the run finished before it could be killed (a fast machine)")
    assert 0 < len(partial) < len(rows), "the kill should land mid-run"
    resumed = subprocess.run(
        [*args, "--resume"], capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return rows, read_output(out, fmt)


@pytest.mark.parametrize(("fmt", "checkpoint"), [("parquet", "ray"), ("jsonl", "files")])
def test_killed_and_resumed_run_has_no_duplicate_and_no_gap(
    tmp_path: Path, servers: list[RunningServer], fmt: str, checkpoint: str
) -> None:
    rows, written = run_killed_then_resumed(tmp_path, servers[0].url, fmt, checkpoint)
    ids = [r["id"] for r in written]
    assert len(ids) == len(set(ids))  # no duplicate
    assert set(ids) == {r["id"] for r in rows}  # no gap
    reference = direct_scores(servers[0].url, rows)
    for row in written:
        expected = reference[row["id"]]
        assert row["ppl"] == pytest.approx(expected.ppl, rel=ppl_rel(expected.ppl))


def test_band_keeps_rows_inside_it_and_refused_rows(
    tmp_path: Path, servers: list[RunningServer]
) -> None:
    rows = corpus_rows(120, seed=5)
    write_inputs(tmp_path / "in", rows, files=2)
    out = tmp_path / "out"
    args = command(tmp_path / "in", out, servers[1].url, "--max-bits-per-char", "1.5")
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    written = read_output(out, "parquet")
    scored = [r for r in written if r["score_error"] is None]
    assert scored and all(r["bits_per_char"] <= 1.5 for r in scored)
    refused = [r for r in written if r["score_error"] is not None]
    assert {r["id"] for r in refused} == {r["id"] for r in rows if len(r.get("text") or "") > 1000}
    reference = direct_scores(servers[1].url, rows)
    expected_kept = {
        rid for rid, result in reference.items() if result and result.bits_per_char <= 1.5
    }
    # A row right at the edge may fall either side within the contract's tolerance.
    edge = {
        rid
        for rid, result in reference.items()
        if result and abs(result.bits_per_char - 1.5) <= 1.5 * BATCH_INVARIANCE_REL
    }
    assert {r["id"] for r in scored} ^ expected_kept <= edge


def test_refuses_a_non_empty_output_without_resume(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_bytes(b"")
    done = subprocess.run(
        [CLI, "ray-score", "x.jsonl", "-o", str(tmp_path / "out"), "--url", "http://h:1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--resume" in done.stderr


def test_resume_without_an_id_column_is_refused_not_written_twice(
    tmp_path: Path, servers: list[RunningServer]
) -> None:
    """Without ids a second run cannot tell which rows are written: it must stop, not
    write every row again (the RayJob manifest always passes --resume)."""
    rows = [{"text": row["text"]} for row in corpus_rows(12) if row.get("text")]
    write_inputs(tmp_path / "in", rows, files=1)
    out = tmp_path / "out"
    args = [*command(tmp_path / "in", out, servers[0].url), "--resume"]
    first = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert first.returncode == 0, first.stderr
    assert len(read_output(out, "parquet")) == len(rows)
    second = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert second.returncode == 2 and "id column" in second.stderr
    assert len(read_output(out, "parquet")) == len(rows)


def test_parquet_in_jsonl_out(tmp_path: Path, servers: list[RunningServer]) -> None:
    import pyarrow as pa

    rows = [{"id": i, "text": f"Parquet row number {i} reads like a sentence."} for i in range(60)]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "rows.parquet")
    out = tmp_path / "out"
    args = [
        CLI,
        "ray-score",
        str(tmp_path / "in" / "*.parquet"),
        "-o",
        str(out),
        "--url",
        servers[1].url,
        "--format",
        "jsonl",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(read_output(out, "jsonl"), key=lambda r: r["id"])
    assert [r["id"] for r in written] == list(range(60))
    reference = direct_scores(servers[1].url, [{"id": r["id"], "text": r["text"]} for r in rows])
    for row in written:
        want = reference[row["id"]].ppl
        assert row["ppl"] == pytest.approx(want, rel=ppl_rel(want))
