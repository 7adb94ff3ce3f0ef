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
import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
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
from lmscore_client.progress_file import CannotResume, Progress, in_memory, prepare
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
        self,
        args: argparse.Namespace,
        out: BinaryIO,
        rejects: Path | None,
        progress: Progress,
        bar: Any,
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
        if self.rejects is None and self.rejects_path is not None:
            self.rejects = self.rejects_path.open("ab")
        if self.rejects is not None:
            line = {"line": item.line_no, "error": self._error(item), "row": item.row}
            self.rejects.write(_dump(line))
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
        self.progress.record(batch.items[-1].line_no, self.out, self.rejects)
        if self.bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.bar.update(len(batch.items))  # input lines, blank ones too: as the total
            self.bar.set_postfix_str(f"{stats.tokens / elapsed:.0f} tok/s", refresh=False)

    def close(self) -> None:
        if self.rejects is not None:
            self.rejects.close()
        if self.bar is not None:
            self.bar.close()


def next_step(error: LMScoreError | None, args: argparse.Namespace) -> str:
    """What to do after a run stopped on ``error`` (None: interrupted)."""
    again = "rerun" if STREAM in (args.input, args.output) else "rerun with --resume"
    if isinstance(error, RequestTimeoutError) and error.status == 504:
        return (
            "the server's deadline passed, retries included: send fewer rows per request "
            f"(--rows-per-request) or raise the server's --request-timeout-s, then {again} "
            "to continue"
        )
    if error is None or isinstance(error, OUTAGES):
        return f"{again} to continue"
    if isinstance(error, UnauthorizedError):
        return f"pass the key with --api-key or $LMSCORE_API_KEY, then {again}"
    return f"fix the cause, then {again} to continue"


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def _bar(input_path: str, lines_done: int) -> Any:
    """A progress bar over input lines on a terminal (None elsewhere). For a file, its
    lines are counted on a side thread, so the bar gains a total and an ETA without
    delaying the first request; a resumed run starts at the lines already done."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        width = 0
    # A terminal that reports no size (some ptys, CI) would get an empty bar.
    size: dict[str, Any] = {"dynamic_ncols": True} if width > 0 else {"ncols": 100, "nrows": 20}
    bar = tqdm(unit=" rows", file=sys.stderr, smoothing=0.1, initial=lines_done, **size)
    if input_path != STREAM:
        counter = threading.Thread(
            target=_set_total, args=(Path(input_path), bar), name="lmscore-count-lines", daemon=True
        )
        counter.start()
    return bar


def _set_total(path: Path, bar: Any) -> None:
    """Set the bar's total to the file's line count (a last line without a newline counts)."""
    lines, last = 0, b"\n"
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    bar.total = lines + (last != b"\n")


STREAM = "-"  # standard input (IN) or standard output (-o)


def _refusal(args: argparse.Namespace, out: Path, rejects: Path | None) -> str | None:
    """Why the paths cannot be used (checked before anything is sent), or None."""
    streams = args.input == STREAM or args.output == STREAM
    if args.resume and streams:
        return "--resume needs a file for IN and -o (a stream cannot be resumed)"
    if args.input != STREAM and not Path(args.input).is_file():
        return f"no input file {args.input}"
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        # Known now, not after hours of scoring.
        return "--plot needs matplotlib: pip install 'lmscore-client[plot]'"
    files = [path for path in (out, rejects) if path is not None and str(path) != STREAM]
    if args.input != STREAM and Path(args.input).resolve() in {p.resolve() for p in files}:
        return "the output must not be the input file"
    if rejects is not None and rejects.resolve() == out.resolve():
        return "the rejects file must not be the output file"
    for path in files:
        if not path.resolve().parent.is_dir():
            return f"no directory {path.parent} to write {path.name} in"
    return None


def _rejects_path(args: argparse.Namespace) -> Path | None:
    """The rejects file: --rejects, else OUT.rejects.jsonl; none for output to a stream
    unless named (the refused rows are in the output, with score_error)."""
    if args.rejects:
        return Path(args.rejects)
    return None if args.output == STREAM else Path(f"{args.output}.rejects.jsonl")


# The status of a process ended by SIGPIPE in a shell (128 + 13): OUT's reader went away.
BROKEN_PIPE = 141


def score_file(args: argparse.Namespace) -> int:
    """Run the subcommand; the exit status (0 done, 1 stopped early or nothing scored,
    2 refused arguments, 141 when the reader of ``-o -`` went away). IN and OUT may be
    ``-``: standard input and output."""
    out, rejects = Path(args.output), _rejects_path(args)
    if refusal := _refusal(args, out, rejects):
        warn(f"lmscore-client: {refusal}")
        return 2
    progress = in_memory()
    if args.output != STREAM:
        assert rejects is not None  # a file output always has its rejects file
        try:
            progress = prepare(args, out, rejects, warn)
        except CannotResume as refused:
            warn(str(refused))
            return 2
    skip = int(progress.state["lines_done"])
    if skip:
        warn(f"resuming after input line {skip}")
    with contextlib.ExitStack() as files:
        lines = (
            _private_stdin()
            if args.input == STREAM
            else files.enter_context(Path(args.input).open("rb"))
        )
        out_file = (
            sys.stdout.buffer if args.output == STREAM else files.enter_context(out.open("ab"))
        )
        writer = Writer(args, out_file, rejects, progress, _bar(args.input, skip))
        status, fatal_error, stopped = _run(args, iter(lines), skip, writer)
    if status == BROKEN_PIPE:  # ``-o - | head``: stop quietly, as Unix filters do
        return status
    stats = writer.stats
    warn(report(stats, args.metric, time.monotonic() - writer.started))
    if status:
        where = "the output" if args.output == STREAM else str(out)
        done = progress.state["lines_done"]
        warn(
            f"{stopped}\n  {where} is valid up to input line {done}; {next_step(fatal_error, args)}"
        )
    elif stats.rows and stats.rejected + stats.errors == stats.rows:
        reasons = f"the reasons are in {rejects}" if rejects else "see score_error in the output"
        warn(f"lmscore-client: no row could be scored; {reasons}")
        status = 1
    if args.plot:
        warn(plot(stats.values, args.metric, args.plot))
    return status


def _private_stdin() -> BinaryIO:
    """Standard input through a stream of our own. Lines are read on a daemon thread (see
    ``read_ahead``); a read still waiting when a run stops early holds its stream's lock,
    and the interpreter aborts at exit closing ``sys.stdin`` under it. This copy is never
    closed: the process ends with it."""
    return open(os.dup(sys.stdin.fileno()), "rb")


def _run(
    args: argparse.Namespace, lines: Iterator[bytes], skip: int, writer: Writer
) -> tuple[int, LMScoreError | None, str]:
    """Score the lines after ``skip`` into ``writer``: the exit status, and the error that
    stopped the run with what to print of it."""
    score = ScoreOptions(
        model=args.model,
        reference=args.reference,
        distribution=requested_distribution(args),
        overflow=args.overflow,
        stride=args.stride,
    )
    opts = pipeline.Options(score=score, compare_model=args.compare_model)
    batches = pipeline.read_batches(
        lines,
        skip=skip,
        rows_per_request=args.rows_per_request,
        text_field=args.field,
        chat_field=args.chat_field or None,
    )

    async def main() -> None:
        async with pipeline.client_from_args(args) as client:
            await pipeline.run(
                client,
                batches,
                writer,
                concurrency=args.concurrency,
                opts=opts,
                info=pipeline.RunInfo(),
            )

    try:
        asyncio.run(main())
        writer.progress.save(complete=True)
        return 0, None, ""
    except pipeline.Fatal as fatal:
        return 1, fatal.error, f"lmscore-client: stopped: {fatal.error}"
    except KeyboardInterrupt:
        return 130, None, "lmscore-client: interrupted"
    except BrokenPipeError:
        _detach_stdout()
        return BROKEN_PIPE, None, ""
    finally:
        writer.close()


def _detach_stdout() -> None:
    """Point standard output at /dev/null: its reader is gone, and the interpreter's last
    flush of what is still buffered would fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
