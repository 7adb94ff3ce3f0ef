"""``lmscore-client score-file``: score a JSONL file row by row through the REST API.

Every input row comes back, in input order, with the scores added; blank lines are not
rows. A row that cannot be scored (not JSON, no text, refused by the server) comes back
with null scores and ``score_error`` saying why, and is also written to the rejects file.
``--min-ppl``/``--max-ppl`` keep only rows inside the band (refused rows have no PPL, so
they are left out then).

Progress is kept in the sidecar ``OUT.progress`` (input lines done and the byte sizes of
OUT and the rejects file after the last in-order write), so ``--resume`` truncates any
half-written tail, skips exactly the lines already accounted for and appends without
duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from lmscore_client import pipeline
from lmscore_client.build import Distribution, ScoreOptions
from lmscore_client.compare import CompareResult
from lmscore_client.errors import (
    ConnectionFailedError,
    LMScoreError,
    OverloadedError,
    RequestTimeoutError,
    UnauthorizedError,
    UnavailableError,
)
from lmscore_client.summary import ENTROPY_METRICS, EXTRA_FIELDS, Stats, plot, report

SCORE_FIELDS = ("ppl", "mean_nll", "bits_per_byte", "bits_per_char", "num_scored_tokens")
ERROR_FIELD = "score_error"  # why a row has no scores (null scores alongside)
# Errors a later attempt may not meet (the client's timeout: one may raise it).
OUTAGES = (ConnectionFailedError, OverloadedError, UnavailableError, RequestTimeoutError)


def _dump(obj: Any) -> bytes:
    """One JSONL line: UTF-8, or ASCII escapes for a row holding a lone surrogate (read
    from a ``\\udc80`` escape), which UTF-8 cannot carry; the escape is written back."""
    try:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj) + "\n").encode("ascii")


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
    ``out_bytes`` bytes) and the rejects file (its first ``rejects_bytes`` bytes)."""

    def __init__(self, path: Path, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)


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


def requested_distribution(args: argparse.Namespace) -> Distribution | None:
    """What the server must compute for ``--fields`` and an entropy ``--metric``."""
    entropy = "entropy" in args.fields or args.metric in ENTROPY_METRICS
    min_k = "min_k" in args.fields
    if not entropy and not min_k:
        return None
    return Distribution(entropy=entropy, min_k=min_k, min_k_percent=args.min_k_percent)


def comparison_fields(comparison: CompareResult | None) -> dict[str, Any]:
    """The second model's scores of a row and the bits-per-byte ratio (null for chat rows
    and rows the comparison refused)."""
    other = comparison.scores[1] if comparison is not None else None
    return {
        "compare_ppl": other.ppl if other else None,
        "compare_bits_per_byte": other.bits_per_byte if other else None,
        "compare_bits_per_char": other.bits_per_char if other else None,
        "bits_per_byte_ratio": comparison.bits_per_byte_ratio if comparison else None,
    }


class Writer:
    """Writes each batch handed back in order, then records the progress."""

    def __init__(
        self, args: argparse.Namespace, out: BinaryIO, rejects: Path, progress: Progress, bar: Any
    ) -> None:
        self.args = args
        self.extra_fields = [f for group in args.fields for f in EXTRA_FIELDS[group]]
        self.out = out
        self.rejects_path = rejects
        self.rejects: BinaryIO | None = None
        self.progress = progress
        self.bar = bar
        self.stats = Stats()
        self.started = time.monotonic()

    def _reject(self, item: pipeline.Item) -> None:
        assert item.error is not None
        if self.rejects is None:
            self.rejects = self.rejects_path.open("ab")
        self.rejects.write(
            _dump({"line": item.line_no, "error": self._error(item), "row": item.row})
        )
        if item.error.get("status", 0) >= 500:
            self.stats.errors += 1
        else:
            self.stats.rejected += 1

    def _row(self, item: pipeline.Item) -> dict[str, Any]:
        """The input row with its scores (null ones and ``score_error`` if refused); a
        line that is not a JSON object comes back as ``{"row": <it>}``."""
        result = item.result
        row = dict(item.row) if isinstance(item.row, dict) else {"row": item.row}
        for name in (*SCORE_FIELDS, *self.extra_fields):
            row[name] = getattr(result, name) if result is not None else None
        if self.args.overflow == "truncate":
            row["truncated"] = result.truncated if result is not None else None
        if self.args.reference:
            row["percentile"] = result.percentile if result is not None else None
            row["is_outlier"] = result.is_outlier if result is not None else None
        if self.args.compare_model:
            row.update(comparison_fields(item.comparison if result is not None else None))
        if result is None:
            row[ERROR_FIELD] = self._error(item)
        return row

    def _error(self, item: pipeline.Item) -> dict[str, Any]:
        """The row's error, its field named as in the row (not the request it went in)."""
        assert item.error is not None
        param = pipeline.row_param(
            item.error.get("param"), item, self.args.field, self.args.chat_field or None
        )
        return {**item.error, "param": param}

    def _keep(self, ppl: float | None) -> bool:
        low, high = self.args.min_ppl, self.args.max_ppl
        if low is None and high is None:
            return True
        if ppl is None:
            return False
        return (low is None or ppl >= low) and (high is None or ppl <= high)

    def __call__(self, batch: pipeline.Batch) -> None:
        stats = self.stats
        for item in batch.items:
            if item.kind == "blank":
                continue
            stats.rows += 1
            if item.result is None:
                self._reject(item)
                if self._keep(None):  # no PPL band: every row comes back
                    self.out.write(_dump(self._row(item)))
                continue
            result = item.result
            stats.tokens += result.num_scored_tokens
            value = result.metric(self.args.metric)
            if value is not None:
                stats.values.append(value)
            if not self._keep(result.ppl):
                stats.dropped += 1
                continue
            self.out.write(_dump(self._row(item)))
            stats.kept += 1
        self.out.flush()
        if self.rejects is not None:
            self.rejects.flush()
        self.progress.save(
            lines_done=batch.items[-1].line_no,
            out_bytes=self.out.tell(),
            rejects_bytes=self.rejects.tell()
            if self.rejects
            else self.progress.state["rejects_bytes"],
        )
        if self.bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.bar.update(sum(it.kind != "blank" for it in batch.items))
            self.bar.set_postfix_str(f"{stats.tokens / elapsed:.0f} tok/s", refresh=False)

    def close(self) -> None:
        if self.rejects is not None:
            self.rejects.close()


def next_step(error: LMScoreError | None) -> str:
    """What to do after a run stopped on ``error`` (None: interrupted)."""
    if error is None or isinstance(error, OUTAGES):
        return "rerun with --resume to continue"
    if isinstance(error, UnauthorizedError):
        return "pass the key with --api-key or $LMSCORE_API_KEY, then rerun with --resume"
    return "fix the cause, then rerun with --resume to continue"


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def _bar() -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        width = 0
    # A terminal that reports no size (some ptys, CI) would get an empty bar.
    size: dict[str, Any] = {"dynamic_ncols": True} if width > 0 else {"ncols": 100, "nrows": 20}
    return tqdm(unit=" rows", file=sys.stderr, smoothing=0.1, **size)


def score_file(args: argparse.Namespace) -> int:
    """Run the subcommand; the exit status (0 done, 1 stopped early)."""
    out = Path(args.output)
    rejects = Path(args.rejects or f"{args.output}.rejects.jsonl")
    if not Path(args.input).is_file():
        warn(f"lmscore-client: no input file {args.input}")
        return 2
    if Path(args.input).resolve() in (out.resolve(), rejects.resolve()):
        warn("lmscore-client: the output must not be the input file")
        return 2
    if rejects.resolve() == out.resolve():
        warn("lmscore-client: the rejects file must not be the output file")
        return 2
    for path in (out, rejects):
        if not path.resolve().parent.is_dir():
            warn(f"lmscore-client: no directory {path.parent} to write {path.name} in")
            return 2
    try:
        progress = prepare(args, out, rejects, warn)
    except CannotResume as refused:
        warn(str(refused))
        return 2
    skip = int(progress.state["lines_done"])
    if skip:
        warn(f"resuming after input line {skip}")
    score = ScoreOptions(
        model=args.model,
        reference=args.reference,
        distribution=requested_distribution(args),
        overflow=args.overflow,
        stride=args.stride,
    )
    opts = pipeline.Options(score=score, compare_model=args.compare_model)
    info = pipeline.RunInfo()
    bar = _bar()
    status = 0
    fatal_error: LMScoreError | None = None
    with Path(args.input).open("rb") as lines, out.open("ab") as out_file:
        writer = Writer(args, out_file, rejects, progress, bar)
        batches = pipeline.read_batches(
            iter(lines),
            skip=skip,
            rows_per_request=args.rows_per_request,
            text_field=args.field,
            chat_field=args.chat_field or None,
        )

        async def main() -> None:
            async with pipeline.client_from_args(args) as client:
                await pipeline.run(
                    client, batches, writer, concurrency=args.concurrency, opts=opts, info=info
                )

        try:
            asyncio.run(main())
            progress.save(complete=True)
        except pipeline.Fatal as fatal:
            status = 1
            fatal_error = fatal.error
            message = f"lmscore-client: stopped: {fatal.error}"
        except KeyboardInterrupt:
            status = 130
            message = "lmscore-client: interrupted"
        finally:
            writer.close()
            if bar is not None:
                bar.close()
    elapsed = time.monotonic() - writer.started
    stats = writer.stats
    warn(report(stats, args.metric, elapsed))
    if status:
        done = progress.state["lines_done"]
        warn(f"{message}\n  {out} is valid up to input line {done}; {next_step(fatal_error)}")
    elif stats.rows and stats.rejected + stats.errors == stats.rows:
        warn(f"lmscore-client: no row could be scored; the reasons are in {rejects}")
        status = 1
    if args.plot:
        warn(plot(writer.stats.values, args.metric, args.plot))
    return status
