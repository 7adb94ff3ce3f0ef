"""The progress sidecar of ``score-file`` (``OUT.progress``) and ``--resume``.

The sidecar records how many input lines are fully reflected in OUT and the rejects file,
and their byte sizes after the last in-order write, so ``--resume`` truncates any
half-written tail, skips exactly the lines already accounted for and appends without
duplicates. A run writing to standard output keeps its progress in memory only.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _line_after_rows(path: Path, rows: int) -> int:
    """The input line number of the ``rows``-th row of ``path`` (blank lines are not
    rows), or its last line if it has fewer."""
    seen = line_no = 0
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            seen += bool(line.strip())
            if seen >= rows:
                return line_no if rows else 0
    return line_no


def _line_rows(path: Path, lines: int) -> int:
    """How many rows (non-blank lines) the first ``lines`` lines of ``path`` hold."""
    with path.open("rb") as f:
        return sum(bool(line.strip()) for _, line in zip(range(lines), f, strict=False))


def _complete_lines(path: Path) -> int:
    """Count the newline-terminated lines of ``path`` and cut off a partial last line."""
    if not path.exists():
        return 0
    count, good = 0, 0
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                count += 1
                good += len(line)
    os.truncate(path, good)
    return count


class CannotResume(Exception):
    """``--resume`` was asked, but OUT or its progress file does not belong to this run."""


class Progress:
    """The sidecar file: ``lines_done`` input lines are fully reflected in OUT (its first
    ``out_bytes`` bytes) and the rejects file (its first ``rejects_bytes`` bytes). With no
    ``path`` (output to a stream) it is kept in memory only."""

    def __init__(self, path: Path | None, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def record(self, lines_done: int, out: BinaryIO, rejects: BinaryIO | None) -> None:
        """Input lines up to ``lines_done`` are written (and flushed) to ``out`` and
        ``rejects``; their sizes are where a resumed run cuts them."""
        if self.path is None:  # a stream has no size to record
            self.save(lines_done=lines_done)
            return
        rejects_bytes = rejects.tell() if rejects else self.state["rejects_bytes"]
        self.save(lines_done=lines_done, out_bytes=out.tell(), rejects_bytes=rejects_bytes)


def in_memory() -> Progress:
    """The progress of a run whose output is a stream (nothing to resume)."""
    return Progress(None, {"lines_done": 0})


def prepare(
    args: argparse.Namespace, out: Path, rejects: Path, warn: Callable[[str], None]
) -> Progress:
    """Set up OUT, the rejects file and the progress state for a fresh or resumed run."""
    progress_path = out.with_name(out.name + ".progress")
    base = {"input": str(Path(args.input).resolve()), "lines_done": 0}
    if args.resume and progress_path.exists():
        state = json.loads(progress_path.read_text())
        if state.get("input") != base["input"]:
            raise CannotResume(
                f"lmscore-client: {progress_path} was written for {state.get('input')}, "
                f"not {base['input']}; cannot resume (run without --resume to start over)"
            )
        for path, key in ((out, "out_bytes"), (rejects, "rejects_bytes")):
            size = path.stat().st_size if path.exists() else 0
            if size < state.get(key, 0):
                raise CannotResume(
                    f"lmscore-client: {path} is shorter than {progress_path} records; "
                    "cannot resume safely (run without --resume to start over)"
                )
            if path.exists():
                os.truncate(path, state.get(key, 0))
        state["complete"] = False
        return Progress(progress_path, state)
    if args.resume and out.exists():
        rows = _complete_lines(out)
        done = _line_after_rows(Path(args.input), rows)
        if rows > _line_rows(Path(args.input), done):
            raise CannotResume(
                f"lmscore-client: {out} has {rows} rows, more than {args.input} has; it was "
                "not written from this input (run without --resume to start over)"
            )
        _complete_lines(rejects)  # only to cut a half-written last line
        warn(
            f"warning: no {progress_path}; assuming OUT's {rows} rows are the first input "
            f"rows (up to line {done}), which holds unless a PPL band left rows out"
        )
        state = {**base, "lines_done": done}
    else:
        for path in (out, rejects, progress_path):
            path.unlink(missing_ok=True)
        out.touch()
        state = base
    state["out_bytes"] = out.stat().st_size
    state["rejects_bytes"] = rejects.stat().st_size if rejects.exists() else 0
    progress = Progress(progress_path, state)
    progress.save()
    return progress
