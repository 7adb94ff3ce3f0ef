"""``lmscore-client score-file`` / ``calibrate`` against a fake server: order under
concurrency, rejects, filters, outages and resuming (fast; no model)."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import select
import subprocess
from pathlib import Path

import pytest
from cli_helpers import CLI, read_jsonl, write_jsonl
from fake_server import FakeServer, fake_result

from lmscore_client.cli import main
from lmscore_client.profile import quantiles

FIELDS = ("ppl", "mean_nll", "bits_per_byte", "bits_per_char", "num_scored_tokens")


def _rows(n: int) -> list[dict]:
    return [
        {"id": i, "text": f"row {i} says " + "la " * (i % 13), "meta": {"k": i}} for i in range(n)
    ]


def _score(url: str, inp: Path, out: Path, *extra: str) -> int:
    return main(["score-file", str(inp), "-o", str(out), "--url", url, *extra])


def _expected(rows: list[dict]) -> list[dict]:
    return [{**r, **{k: fake_result(r["text"])[k] for k in FIELDS}} for r in rows]


def test_rows_come_back_in_order_with_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(500)
    rows[7] = {"id": 7, "messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"}]}  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        args = ("--concurrency", "8", "--rows-per-request", "7")
        assert _score(server.url, inp, out, *args) == 0
    got = read_jsonl(out)
    assert [r["id"] for r in got] == list(range(500))
    chat = fake_result("hi there hello you")
    assert got[7]["ppl"] == chat["ppl"] and got[7]["messages"] == rows[7]["messages"]
    assert got[:7] == _expected(rows[:7]) and got[8:] == _expected(rows[8:])
    assert 1 < server.max_inflight <= 8
    assert max(server.batch_sizes) <= 7
    assert not (tmp_path / "out.jsonl.rejects.jsonl").exists()
    err = capsys.readouterr().err
    assert "rows 500, kept 500, dropped 0, rejected 0, errors 0" in err
    assert "p1 " in err and "p50 " in err and "p99 " in err
    assert "histogram of ppl (log-spaced bins)" in err and "█" in err


def test_rejects_are_written_with_their_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps(r) + "\n" for r in _rows(40)]
    lines[3] = json.dumps({"id": 3, "text": ""}) + "\n"
    lines[5] = json.dumps({"id": 5, "body": "no text field"}) + "\n"
    lines[9] = "{not json\n"
    lines[11] = "[1, 2]\n"
    lines[13] = json.dumps({"id": 13, "text": 42}) + "\n"
    lines[17] = json.dumps({"id": 17, "text": "this goes BOOM on the server"}) + "\n"
    lines[19] = "\n"
    lines[21] = json.dumps({"id": 21, "messages": "not a list"}) + "\n"
    lines[23] = json.dumps({"id": 23, "messages": ["not a message"]}) + "\n"
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, inp, out, "--rows-per-request", "8", "--concurrency", "3") == 0
    refused = {3, 5, 9, 11, 13, 17, 21, 23}
    # Every row comes back in order (the blank line is no row); lines that are not JSON
    # objects come back as {"row": ...}.
    got = read_jsonl(out)
    assert [r.get("id") for r in got] == [None if i in (9, 11) else i for i in range(40) if i != 19]
    assert got[9]["row"] == "{not json" and got[11]["row"] == [1, 2]
    for i, row in zip((i for i in range(40) if i != 19), got, strict=True):
        if i in refused:
            assert all(row[k] is None for k in FIELDS) and row["score_error"]["type"]
        else:
            assert "score_error" not in row and row["ppl"] is not None
    assert got[3]["text"] == "" and got[3]["score_error"]["status"] == 422
    assert got[5]["score_error"]["type"] == "missing_field"
    rejects = read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")
    by_line = {r["line"]: r for r in rejects}
    assert sorted(by_line) == [4, 6, 10, 12, 14, 18, 22, 24]  # 1-based; blank line skipped
    assert by_line[4]["error"]["status"] == 422 and by_line[4]["row"] == {"id": 3, "text": ""}
    assert by_line[4]["error"]["param"] == "text"  # the row's field, not its request place
    assert by_line[6]["error"]["type"] == "missing_field"
    assert by_line[10]["error"]["type"] == "invalid_json" and by_line[10]["row"] == "{not json"
    assert by_line[12]["error"]["type"] == "invalid_row"
    assert by_line[14]["error"]["status"] == 422
    assert by_line[18]["error"]["status"] == 500
    assert by_line[22]["error"]["type"] == "invalid_row"
    assert by_line[24]["error"]["param"] == "messages"
    err = capsys.readouterr().err
    assert "rows 39, kept 31, dropped 0, rejected 7, errors 1" in err


def test_resume_without_the_sidecar_skips_blank_lines_and_refused_rows(tmp_path: Path) -> None:
    """Without OUT.progress, OUT's rows are taken as the first input rows: blank lines are
    not rows, and refused rows are in OUT too, so nothing is scored twice."""
    lines = [json.dumps(r) + "\n" for r in _rows(60)]
    for i in (4, 5, 20, 33):
        lines[i] = "\n"
    lines[10] = json.dumps({"id": 10, "body": "no text"}) + "\n"
    lines[25] = "{not json\n"
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, inp, out, "--rows-per-request", "8") == 0
        full = out.read_bytes()
        kept = full.splitlines(keepends=True)
        for cut in (0, 3, 9, 30, len(kept)):
            (tmp_path / "out.jsonl.progress").unlink()
            out.write_bytes(b"".join(kept[:cut]))
            assert _score(server.url, inp, out, "--resume") == 0
            assert out.read_bytes() == full, cut


def test_ppl_band_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "text": "ab " + "x" * i} for i in range(60)] + [{"id": 60, "text": "single"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        code = _score(server.url, inp, out, "--min-ppl", "20", "--max-ppl", "40.5")
    assert code == 0
    kept = read_jsonl(out)
    # fake ppl = 1 + len(text) = 4 + i; "single" scores no token (ppl null): dropped
    assert [r["id"] for r in kept] == [i for i in range(60) if 20 <= 4 + i <= 40.5]
    assert all(20 <= r["ppl"] <= 40.5 for r in kept)
    assert f"kept {len(kept)}, dropped {61 - len(kept)}, rejected 0" in capsys.readouterr().err


def test_outage_stops_then_resume_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(300)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ("--rows-per-request", "10", "--concurrency", "3", "--max-attempts", "2")
    band = ("--max-ppl", "40")  # drops some rows: they must not be scored again
    with FakeServer(fail_after=8) as down:
        code = _score(down.url, inp, out, *args, *band)
    assert code == 1
    err = capsys.readouterr().err
    assert "stopped: 503 unavailable" in err and "rerun with --resume" in err
    expected = [r for r in _expected(rows) if r["ppl"] <= 40]
    partial = read_jsonl(out)
    assert partial == expected[: len(partial)]  # a valid prefix
    done = json.loads((tmp_path / "out.jsonl.progress").read_text())["lines_done"]
    assert 0 < done < 300 and done % 10 == 0
    with FakeServer() as up:
        assert _score(up.url, inp, out, *args, *band, "--resume") == 0
    assert sum(up.batch_sizes) == 300 - done  # only the rows not done before
    assert read_jsonl(out) == expected
    assert f"resuming after input line {done}" in capsys.readouterr().err


def test_a_server_timeout_is_retried_not_written_as_the_rows_error(tmp_path: Path) -> None:
    rows = _rows(40)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeServer(timeouts=2) as server:
        code = _score(server.url, inp, out, "--rows-per-request", "10", "--concurrency", "1")
    assert code == 0
    assert read_jsonl(out) == _expected(rows)  # no score_error 504 baked in
    assert sorted(server.batch_sizes) == [10] * 4  # retried whole, not split in halves


def test_a_server_timeout_that_persists_stops_the_run_and_resume_scores_those_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(30)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ("--rows-per-request", "10", "--concurrency", "1", "--max-attempts", "2")
    with FakeServer(timeouts=10**6) as slow:
        assert _score(slow.url, inp, out, *args) == 1
    err = capsys.readouterr().err
    assert "504 timeout" in err and "--request-timeout-s" in err and "--resume" in err
    assert not any("score_error" in row for row in read_jsonl(out))
    with FakeServer() as up:
        assert _score(up.url, inp, out, *args, "--resume") == 0
    assert read_jsonl(out) == _expected(rows)


def test_calibrate_stops_on_a_server_timeout_rather_than_write_a_profile(tmp_path: Path) -> None:
    rows = _rows(20)
    rows[7]["text"] = "a SLOW row"  # its 504 used to make it a rejected row
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    profile = tmp_path / "profile.json"
    with FakeServer() as slow:
        code = main(["calibrate", str(inp), "-o", str(profile), "--url", slow.url, "--max-attempts", "1"])  # fmt: skip
    assert code == 1 and not profile.exists()


def test_resume_cuts_a_half_written_tail(tmp_path: Path) -> None:
    rows = _rows(120)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, inp, out, "--rows-per-request", "16") == 0
        full = out.read_bytes()
        # as if killed after 50 rows were recorded and while writing the next ones
        progress = tmp_path / "out.jsonl.progress"
        offset = sum(len(line) for line in full.splitlines(keepends=True)[:50])
        state = json.loads(progress.read_text())
        progress.write_text(
            json.dumps({**state, "lines_done": 50, "out_bytes": offset, "complete": False})
        )
        out.write_bytes(full[: offset + 70])  # a row and a half past the record
        assert _score(server.url, inp, out, "--rows-per-request", "16", "--resume") == 0
        assert out.read_bytes() == full
        # no progress file: OUT's complete lines count as done
        progress.unlink()
        out.write_bytes(full[: offset + 70])
        assert _score(server.url, inp, out, "--resume") == 0
        assert out.read_bytes() == full
        # resuming a finished run scores nothing
        served = server.served
        assert _score(server.url, inp, out, "--resume") == 0
        assert server.served == served and out.read_bytes() == full


def test_the_summary_has_a_text_histogram_of_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(20))
    with FakeServer() as server:
        code = _score(server.url, inp, tmp_path / "out.jsonl", "--metric", "bits_per_char")
    assert code == 0
    assert "histogram of bits_per_char (linear bins)" in capsys.readouterr().err


def test_plot_without_matplotlib_is_refused_before_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It scored the whole file, then said matplotlib was missing and exited 0.
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(20))
    png, out = tmp_path / "hist.png", tmp_path / "out.jsonl"
    with FakeServer() as server:
        code = _score(server.url, inp, out, "--plot", str(png), "--metric", "bits_per_char")
        served = server.served
    err = capsys.readouterr().err
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 2 and "pip install 'lmscore-client[plot]'" in err
        assert served == 0 and not out.exists() and not png.exists()
    else:
        assert code == 0 and "histogram of bits_per_char (linear bins)" in err
        assert png.stat().st_size > 0


def test_calibrate_on_fake_scores(tmp_path: Path) -> None:
    rows = [*_rows(50), {"id": 50, "text": "oneword"}, {"id": 51, "text": ""}]
    inp = write_jsonl(tmp_path / "ref.jsonl", rows)
    profile_path = tmp_path / "profile.json"
    with FakeServer() as server:
        args = ["calibrate", str(inp), "-o", str(profile_path), "--url", server.url]
        assert main([*args, "--threshold-quantile", "0.9"]) == 0
    profile = json.loads(profile_path.read_text())
    values = [fake_result(r["text"])["bits_per_char"] for r in rows[:50]]
    assert profile["format"] == "lmscore.reference.v1"
    assert (profile["model"], profile["revision"]) == ("default", "sha256:fake")
    assert profile["metric"] == "bits_per_char" and profile["count"] == 50
    assert profile["skipped"] == 1 and profile["rejected"] == 1
    table = quantiles(values)
    assert [p for p, _ in profile["quantiles"]] == [p for p, _ in table]
    assert [v for _, v in profile["quantiles"]] == pytest.approx([v for _, v in table])
    assert profile["threshold"] == pytest.approx(table[90][1])
    assert profile["threshold_quantile"] == 0.9 and profile["source"] == "ref.jsonl"
    # The served model's dtype, from its card: a server in another dtype refuses the profile.
    assert (profile["dtype"], profile["backend"]) == ("bfloat16", "transformers")


def test_calibrate_writes_the_profile_to_stdout_with_o_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `-o -` wrote a file named "-" in the working directory.
    monkeypatch.chdir(tmp_path)
    inp = write_jsonl(tmp_path / "ref.jsonl", _rows(20))
    with FakeServer() as server:
        assert main(["calibrate", str(inp), "-o", "-", "--url", server.url]) == 0
    captured = capsys.readouterr()
    profile = json.loads(captured.out)
    assert profile["format"] == "lmscore.reference.v1" and profile["count"] == 20
    assert "profile written to standard output" in captured.err
    assert not (tmp_path / "-").exists()


def test_unreachable_server_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    out = tmp_path / "out.jsonl"
    code = _score("http://127.0.0.1:9", inp, out, "--max-attempts", "1")
    assert code == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert out.read_text() == ""


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(200))
    controller, terminal = pty.openpty()
    shown = bytearray()
    with FakeServer(max_delay_s=0.05) as server:
        process = subprocess.Popen(
            [CLI, "score-file", str(inp), "-o", str(tmp_path / "out.jsonl"), "--url", server.url,
             "--rows-per-request", "5", "--concurrency", "2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        while True:  # read while it runs: a pty drops what is unread when it closes
            ready, _, _ = select.select([controller], [], [], 60)
            try:
                chunk = os.read(controller, 65536) if ready else b""
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0
    os.close(controller)
    text = shown.decode("utf-8", "replace")
    # the file's line count is the total, so the bar has a percentage and an ETA
    assert "100%" in text and "200/200" in text and "rows/s" in text and "tok/s" in text


def test_bad_paths_are_refused_before_touching_out(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"keep": "me"}\n')
    assert _score("http://127.0.0.1:9", tmp_path / "missing.jsonl", out) == 2
    assert _score("http://127.0.0.1:9", out, out) == 2
    assert out.read_text() == '{"keep": "me"}\n'


def _strict_json(line: str) -> object:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> object:
        raise ValueError(constant)

    return json.loads(line, parse_constant=refuse)


def test_surrogates_and_numbers_json_lacks_cost_only_their_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lone surrogate escape (scraped data has them) in a text is the server's to refuse
    (422, that row); in another field it is written back as the same escape. NaN, Infinity
    and numbers beyond a double are not JSON: those rows are refused as invalid JSON, as
    OUT could hold them only as invalid JSON."""
    lines = [json.dumps(r) + "\n" for r in _rows(12)]
    lines[2] = '{"id": 2, "text": "bad \\udc80 text"}\n'
    lines[4] = '{"id": 4, "text": "fine text here", "note": "odd \\ud83d end"}\n'
    lines[6] = '{"id": 6, "text": NaN}\n'
    lines[8] = '{"id": 8, "text": "fine row", "x": 1e400}\n'
    lines[10] = '{"id": 10, "text": "fine row", "y": -Infinity}\n'
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, inp, out, "--rows-per-request", "4") == 0
    written = out.read_text(encoding="utf-8").splitlines()
    got = [_strict_json(line) for line in written]
    assert len(got) == 12
    assert got[2]["score_error"]["status"] == 422
    assert got[2]["score_error"]["param"] == "text"
    assert got[4]["note"] == "odd \ud83d end" and got[4]["ppl"] is not None
    assert "\\ud83d" in written[4]
    for i in (6, 8, 10):
        assert got[i]["score_error"]["type"] == "invalid_json"
        assert got[i]["row"] == lines[i].rstrip("\n")
    scored = [i for i in range(12) if i not in (2, 6, 8, 10)]
    assert all(got[i]["ppl"] == fake_result(_rows(12)[i]["text"])["ppl"] for i in scored if i != 4)
    assert "rows 12, kept 8, dropped 0, rejected 4, errors 0" in capsys.readouterr().err


def test_a_request_too_large_for_the_server_is_split_in_halves(tmp_path: Path) -> None:
    rows = _rows(64)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeServer(max_texts=5) as server:
        assert _score(server.url, inp, out, "--rows-per-request", "16") == 0
    assert read_jsonl(out) == _expected(rows)
    assert server.batch_sizes == [4] * 16  # 16 -> 8 -> 4, not one row per request


def test_overflow_reaches_the_server(tmp_path: Path) -> None:
    rows = [{"id": 0, "text": "short one here"}, {"id": 1, "text": "a LONG text here"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    with FakeServer() as server:
        assert _score(server.url, inp, tmp_path / "a.jsonl") == 0
        assert _score(server.url, inp, tmp_path / "b.jsonl", "--overflow", "truncate") == 0
    refused, truncated = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert refused[1]["score_error"]["param"] == "text" and "truncated" not in refused[0]
    assert [r["truncated"] for r in truncated] == [False, True]
    assert truncated[1]["ppl"] == fake_result(rows[1]["text"])["ppl"]


def test_a_run_that_scores_no_row_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    with FakeServer() as server:
        assert _score(server.url, inp, tmp_path / "out.jsonl", "--field", "txt") == 1
    assert "no row could be scored" in capsys.readouterr().err


def test_resume_refuses_an_output_that_belongs_to_another_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_jsonl(tmp_path / "first.jsonl", _rows(30))
    second = write_jsonl(tmp_path / "second.jsonl", _rows(10))
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, first, out) == 0
        full = out.read_bytes()
        assert _score(server.url, second, out, "--resume") == 2
        assert "was written for" in capsys.readouterr().err
        (tmp_path / "out.jsonl.progress").unlink()
        assert _score(server.url, second, out, "--resume") == 2
        assert "30 rows, more than" in capsys.readouterr().err
    assert out.read_bytes() == full


def test_outputs_that_cannot_be_written_are_refused_before_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    out = tmp_path / "out.jsonl"
    with FakeServer() as server:
        assert _score(server.url, inp, tmp_path / "no" / "out.jsonl") == 2
        assert "no directory" in capsys.readouterr().err
        assert _score(server.url, inp, out, "--rejects", str(out)) == 2
        profile = tmp_path / "no" / "profile.json"
        assert main(["calibrate", str(inp), "-o", str(profile), "--url", server.url]) == 2
        assert server.served == 0
    for bad in (["--max-ppl", "nan"], ["--min-ppl", "0.5"], ["--url", "127.0.0.1:8000"]):
        with pytest.raises(SystemExit) as exited:
            main(["score-file", str(inp), "-o", str(out), *bad])
        assert exited.value.code == 2
    assert not out.exists()


def test_standard_input_and_output_stand_for_dash(tmp_path: Path) -> None:
    """`cat IN | score-file - -o -` streams: rows in order on stdout, the summary on
    stderr, no file written (the refused rows are in the output); --resume is refused."""
    rows = _rows(40)
    rows[5] = {"id": 5, "text": ""}  # refused by the server
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    with FakeServer() as server:
        common = ["--url", server.url, "--rows-per-request", "7", "--concurrency", "3"]
        done = subprocess.run(
            [CLI, "score-file", "-", "-o", "-", *common],
            input=data, capture_output=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert got[:5] == _expected(rows[:5]) and got[6:] == _expected(rows[6:])
        assert got[5]["score_error"]["param"] == "text" and got[5]["ppl"] is None
        assert "rows 40, kept 39" in done.stderr.decode()
        assert list(tmp_path.iterdir()) == []
        to_file = subprocess.run(
            [CLI, "score-file", "-", "-o", "out.jsonl", "--rejects", "rej.jsonl", *common],
            input=data, capture_output=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert to_file.returncode == 0, to_file.stderr
        assert read_jsonl(tmp_path / "out.jsonl") == got
        assert [r["line"] for r in read_jsonl(tmp_path / "rej.jsonl")] == [6]
        resumed = subprocess.run(
            [CLI, "score-file", "-", "-o", "-", "--resume", *common],
            input=data, capture_output=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert resumed.returncode == 2 and b"cannot be resumed" in resumed.stderr


def test_a_slow_input_stream_does_not_hold_back_answered_rows(tmp_path: Path) -> None:
    """A row's answer is written while the next row has not arrived on stdin yet: the input
    was read on the event loop, so a pipe waiting for its producer stalled everything."""
    rows = _rows(2)
    with FakeServer() as server:
        process = subprocess.Popen(
            [CLI, "score-file", "-", "-o", "-", "--url", server.url, "--rows-per-request", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write((json.dumps(rows[0]) + "\n").encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 30)
            assert ready, "the first row's answer waited for the second row"
            first = json.loads(process.stdout.readline())
            process.stdin.write((json.dumps(rows[1]) + "\n").encode())
            process.stdin.close()
            second = json.loads(process.stdout.readline())
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert [first, second] == _expected(rows)


def test_a_run_that_stops_while_stdin_stays_open_exits_cleanly(tmp_path: Path) -> None:
    """The next line's read is still waiting when the run stops (here: no server): the
    interpreter aborted at exit (134, "could not acquire lock for <stdin>")."""
    process = subprocess.Popen(
        [CLI, "score-file", "-", "-o", "-", "--url", "http://127.0.0.1:9", "--max-attempts", "1",
         "--rows-per-request", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    try:
        process.stdin.write((json.dumps(_rows(1)[0]) + "\n").encode())
        process.stdin.flush()  # and left open, as `tail -f corpus | score-file -` leaves it
        assert process.wait(timeout=60) == 1
        err = process.stderr.read().decode()
        assert "cannot reach" in err and "Fatal Python error" not in err
    finally:
        process.stdin.close()
        if process.poll() is None:
            process.kill()


def test_output_to_a_pipe_closed_early_stops_quietly(tmp_path: Path) -> None:
    # `score-file IN -o - | head -1` ended in a BrokenPipeError traceback and status 1.
    inp = write_jsonl(tmp_path / "in.jsonl", _rows(3000))
    with FakeServer() as server:
        command = [CLI, "score-file", str(inp), "-o", "-", "--url", server.url]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            first = json.loads(process.stdout.readline())
            process.stdout.close()  # as `head -1` does
            stderr = process.stderr.read()
            status = process.wait(timeout=120)
    assert first["id"] == 0
    assert status == 141, stderr  # a shell's status for a filter ended by SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
