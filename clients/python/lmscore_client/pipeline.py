"""Streaming batch scoring of JSONL rows: read lazily, batch, keep N requests in flight,
hand batches back strictly in input order (used by ``score-file`` and ``calibrate``).

A row the server refuses (4xx, or a 5xx that is not an outage) is marked with its error
and handed back like any other; a batch refused as a whole is retried without the row
the error names (``texts[i]``), or in halves when it names none (down to single rows).
Outages (429/503/no connection after the client's retries, no answer within the client's
timeout) and request-wide refusals (unknown model, bad API key, unknown reference) stop
the run: ``Fatal`` is raised after every batch before the failing one has been handed
back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from lmscore_client import build
from lmscore_client.build import ApiCall, ScoreOptions
from lmscore_client.client import AsyncClient
from lmscore_client.compare import CompareResult
from lmscore_client.errors import (
    ConnectionFailedError,
    InvalidRequestError,
    LMScoreError,
    OverloadedError,
    RequestTimeoutError,
    UnavailableError,
)
from lmscore_client.read_ahead import next_off_loop
from lmscore_client.results import ScoreResponse, TextResult
from lmscore_client.retry import RETRY_STATUSES, RetryPolicy

Kind = Literal["text", "chat", "reject", "blank"]
# A field of one row of a request: its index in the request, then the rest of the path.
_ROW_PARAM = re.compile(r"^(?:texts|conversations)\[(\d+)\](.*)$")
# Statuses that concern the rows of a request rather than the run (504: see Options).
_ROW_STATUSES = frozenset({400, 413, 422, 500})
T = TypeVar("T")
FILE_RETRY_STATUSES = RETRY_STATUSES | {504}


class Fatal(Exception):
    """The run cannot go on (server down, unknown model, refused key...)."""

    def __init__(self, error: LMScoreError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Item:
    """One input line: its parsed row, what to send, and what came back."""

    line_no: int  # 1-based
    kind: Kind
    row: Any = None
    payload: Any = None  # the text, or the list of messages
    result: TextResult | None = None
    error: dict[str, Any] | None = None
    # With ``Options.compare_model``: this text under both models (texts only).
    comparison: CompareResult | None = None


@dataclass
class Batch:
    seq: int
    items: list[Item]


@dataclass
class Options:
    """What every request carries."""

    score: ScoreOptions = field(default_factory=ScoreOptions)
    # A second served model: text rows are also scored side by side with it.
    compare_model: str | None = None
    # A server's 504 that the sender gave up on: the rows' error (Ray: a block must not
    # fail on one slow request), or the end of the run (the file commands: --resume then
    # scores those rows, where an error written into the output would never be redone).
    timeout_is_rows_error: bool = False


class Sender(Protocol):
    """What sends a built request and parses its answer (``AsyncClient`` is one), raising
    ``LMScoreError`` when it fails."""

    async def call(self, api_call: ApiCall[T]) -> T: ...


@dataclass
class RunInfo:
    """Facts learnt from the responses."""

    model: str | None = None
    revision: str | None = None
    revisions: set[str] = field(default_factory=set)


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity, which JSON has not: such a row could be
    written back only as invalid JSON, so it is refused as the input's error."""
    raise ValueError(f"{constant} is not a JSON value")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):  # 1e400: it would come back as Infinity
        raise ValueError(f"the number {number} is beyond a double's range")
    return value


def classify(line_no: int, raw: bytes, text_field: str, chat_field: str | None) -> Item:
    """Parse one JSONL line into an ``Item`` (rows that cannot be sent are rejects)."""
    if not raw.strip():
        return Item(line_no, "blank")
    try:
        row = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        error = {"status": 0, "type": "invalid_json", "message": str(exc), "param": None}
        return Item(line_no, "reject", row=raw.decode("utf-8", "replace").rstrip("\n"), error=error)
    return classify_row(line_no, row, text_field, chat_field)


# What a row's text can be and still go to the server for it to judge.
JSON_VALUES = (str, int, float, bool, list, dict)


def _rejected(line_no: int, row: Any, kind: str, message: str, param: str | None) -> Item:
    error = {"status": 0, "type": kind, "message": message, "param": param}
    return Item(line_no, "reject", row=row, error=error)


def classify_row(line_no: int, row: Any, text_field: str, chat_field: str | None) -> Item:
    """An ``Item`` for a parsed row: a text, a conversation, or a reject saying why not."""
    if not isinstance(row, dict):
        return _rejected(line_no, row, "invalid_row", "not a JSON object", None)
    if chat_field and row.get(chat_field) is not None:
        if not isinstance(row[chat_field], list):
            message = f"{chat_field!r} is not a list of messages"
            return _rejected(line_no, row, "invalid_row", message, chat_field)
        return Item(line_no, "chat", row=row, payload=row[chat_field])
    text = row.get(text_field)
    if isinstance(text, float) and math.isnan(text):  # pandas' and numpy's missing value
        text = None
    if text is not None and not isinstance(text, JSON_VALUES):  # bytes from Parquet...
        message = f"{text_field!r} is a {type(text).__name__}, not a string"
        return _rejected(line_no, row, "invalid_row", message, text_field)
    if text is not None:  # the server judges a JSON value that is not a string (422)
        return Item(line_no, "text", row=row, payload=text)
    wanted = f"{text_field!r}" + (f" or {chat_field!r}" if chat_field else "")
    return _rejected(line_no, row, "missing_field", f"the row has no field {wanted}", text_field)


def row_param(param: Any, item: Item, text_field: str, chat_field: str | None) -> str | None:
    """An error's field as the row's own: ``texts[7]`` (the row's place in the request it
    was sent in, meaningless in the input) becomes ``text``, ``conversations[3][1].role``
    ``messages[1].role``."""
    if param is None:
        return None
    match = _ROW_PARAM.match(str(param))
    if match is None:
        return str(param)
    field = chat_field if item.kind == "chat" and chat_field else text_field
    return field + match.group(2)


def read_batches(
    lines: Iterator[bytes],
    *,
    skip: int,
    rows_per_request: int,
    text_field: str,
    chat_field: str | None,
) -> Iterator[Batch]:
    """Batches of up to ``rows_per_request`` consecutive lines, after ``skip`` lines."""
    seq = 0
    items: list[Item] = []
    for line_no, raw in enumerate(lines, start=1):
        if line_no <= skip:
            continue
        items.append(classify(line_no, raw, text_field, chat_field))
        if len(items) >= rows_per_request:
            yield Batch(seq, items)
            seq, items = seq + 1, []
    if items:
        yield Batch(seq, items)


def _row_error(error: LMScoreError, opts: Options) -> bool:
    """Whether ``error`` is about the rows sent (else it stops the run)."""
    if isinstance(error, ConnectionFailedError | OverloadedError | UnavailableError):
        return False
    if isinstance(error, RequestTimeoutError):
        return opts.timeout_is_rows_error and error.status == 504
    if isinstance(error, InvalidRequestError) and error.status == 0:
        return True  # not sent: a row holds a value JSON cannot carry (NaN, infinity)
    if error.status not in _ROW_STATUSES:
        return False
    if error.status == 413:  # too many or too long rows: split the request
        return True
    # A named request-wide field ("model", "reference"...) is not about any row.
    return error.param is None or error.param == "body" or bool(_ROW_PARAM.match(error.param))


async def _send(sender: Sender, items: list[Item], chat: bool, opts: Options) -> ScoreResponse:
    payloads = [it.payload for it in items]
    if chat:
        return await sender.call(build.score_chat(payloads, opts.score))
    return await sender.call(build.score_text(payloads, opts.score))


async def score_items(
    sender: Sender, items: list[Item], chat: bool, opts: Options, info: RunInfo
) -> None:
    """Fill ``result`` or ``error`` of every item (one kind); raise ``Fatal`` on outages."""
    pending = list(items)
    while pending:
        try:
            response = await _send(sender, pending, chat, opts)
        except LMScoreError as error:
            if not _row_error(error, opts):
                raise Fatal(error) from error
            match = _ROW_PARAM.match(error.param or "")
            if len(pending) == 1 or isinstance(error, RequestTimeoutError):
                # A 504 is the server's deadline, not one row's fault: re-sending halves
                # to an overloaded server would cost a deadline each, one after another.
                for item in pending:
                    item.error = error.to_dict()
                return
            if match and int(match.group(1)) < len(pending):
                pending.pop(int(match.group(1))).error = error.to_dict()
                continue
            # Which row is unknown (or the request is too large as a whole): halves, so
            # a too-large request is split only as far as it must be, and one bad row
            # among n costs about log2(n) requests.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                await score_items(sender, part, chat, opts, info)
            return
        info.model = info.model or response.model
        info.revision = info.revision or response.model_revision
        info.revisions.add(response.model_revision)
        for item, result in zip(pending, response.results, strict=True):
            item.result = result
        return


async def compare_items(sender: Sender, items: list[Item], opts: Options, info: RunInfo) -> None:
    """Score the scored text rows under ``opts.model`` and ``opts.compare_model`` side by
    side; a row the comparison refuses keeps its own scores and no comparison."""
    assert opts.compare_model is not None
    done = [it for it in items if it.result is not None]
    model = opts.score.model or info.model  # the server's default, as the scores named it
    if not done or model is None:
        return
    models = [model, opts.compare_model]
    try:
        texts = [it.payload for it in done]
        api_call = build.compare(models, texts, token_level=False, return_tokens=False)
        response = await sender.call(api_call)
    except LMScoreError as error:
        if not _row_error(error, opts):
            raise Fatal(error) from error
        if len(done) > 1:  # which row is unknown: in halves
            half = len(done) // 2
            for part in (done[:half], done[half:]):
                await compare_items(sender, part, opts, info)
        return
    for item, result in zip(done, response.results, strict=True):
        item.comparison = result


async def score_batch(sender: Sender, batch: Batch, opts: Options, info: RunInfo) -> Batch:
    """Score a batch's texts and conversations (and compare its texts when asked)."""
    for kind in ("text", "chat"):
        items = [it for it in batch.items if it.kind == kind]
        if items:
            await score_items(sender, items, kind == "chat", opts, info)
            if kind == "text" and opts.compare_model is not None:
                await compare_items(sender, items, opts, info)
    return batch


async def run(
    sender: Sender,
    batches: Iterator[Batch],
    on_batch: Callable[[Batch], None],
    *,
    concurrency: int,
    opts: Options,
    info: RunInfo,
) -> None:
    """Score ``batches`` with up to ``concurrency`` requests in flight; call ``on_batch``
    for each in input order. Raises ``Fatal`` after handing back every batch before the
    one that failed (the others are cancelled)."""
    window: deque[asyncio.Task[Batch]] = deque()
    max_window = 4 * concurrency  # finished batches waiting for a slow earlier one
    reading: asyncio.Task[Batch | None] | None = None  # the next batch, read off the loop
    exhausted = False
    try:
        while True:
            while window and window[0].done():
                on_batch(window.popleft().result())  # raises the batch's Fatal
            running = sum(not t.done() for t in window)
            room = running < concurrency and len(window) < max_window
            if reading is None and not exhausted and room:
                reading = asyncio.create_task(next_off_loop(batches))
            waiting = [t for t in window if not t.done()] + ([reading] if reading else [])
            if not waiting:
                if exhausted and not window:
                    return
                continue
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if reading is not None and reading.done():
                batch, reading = reading.result(), None
                if batch is None:
                    exhausted = True
                else:
                    window.append(asyncio.create_task(score_batch(sender, batch, opts, info)))
    finally:
        unfinished = [*window, *([reading] if reading else [])]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)


def client_from_args(args: argparse.Namespace) -> AsyncClient:
    """The AsyncClient both file commands use: one connection per request in flight. A
    server's 504 (its deadline passed, as under a burst of load) is tried again with the
    429s and 503s: scoring is read-only, and the rows are wanted, not their timeouts."""
    return AsyncClient(
        args.url,
        api_key=args.api_key,
        timeout=args.timeout,
        retry=RetryPolicy(max_attempts=args.max_attempts, retry_statuses=FILE_RETRY_STATUSES),
        max_connections=args.concurrency,
    )
