"""The callables Ray Data runs in its actors (``ds.map_batches(RemoteScorer, ...)``): each
call scores one block and returns it with the score columns, rows in input order.

Within a block, rows are sorted by length and sent in groups of ``rows_per_request``, up to
``concurrency`` requests at a time, so each forward pass the server runs holds texts of
similar length. A row the server refuses gets its error in the error column; an outage (no
server can take the work within the retry budget) fails the block, and Ray reports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lmscore_client import pipeline
from lmscore_client.build import ScoreOptions
from lmscore_client.pipeline import Item, Sender
from lmscore_client.ray.columns import RowFormat, block_items, payload_chars, with_scores
from lmscore_client.ray.senders import EmbeddedSender, FailoverSender, Servers


@dataclass(frozen=True)
class InProcess:
    """Score in the Ray worker's own process, no servers: ``settings`` are the server's
    (``lmscore serve`` flags as keywords: ``model``, ``dtype``, ``device``, ...). The engine
    takes the GPU Ray gives the actor (``device`` ``auto``), else runs on the CPU."""

    settings: Mapping[str, Any] = field(default_factory=dict)


class _BlockScorer:
    """Scores blocks through ``self.sender`` on an event loop the actor keeps."""

    def __init__(
        self,
        sender: Sender,
        options: ScoreOptions | None,
        rows: RowFormat | None,
        rows_per_request: int,
        concurrency: int,
    ) -> None:
        if rows_per_request < 1 or concurrency < 1:
            raise ValueError("rows_per_request and concurrency must be at least 1")
        self.options = check_columns(options or ScoreOptions())
        self.sender = sender
        self.rows = rows or RowFormat()
        self.rows_per_request = rows_per_request
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()

    def __call__(self, block: Any) -> pa.Table:
        """Score a batch in any of Ray Data's formats (pyarrow, pandas, or numpy's dict of
        arrays); the answer is a pyarrow table."""
        return self._loop.run_until_complete(self.score_block(as_arrow(block)))

    async def score_block(self, block: pa.Table) -> pa.Table:
        """``block`` with the score columns appended, rows in their input order."""
        items = block_items(block, self.rows)
        groups: list[tuple[list[Item], bool]] = []
        for kind in ("text", "chat"):
            by_length = sorted((it for it in items if it.kind == kind), key=payload_chars)
            for start in range(0, len(by_length), self.rows_per_request):
                groups.append((by_length[start : start + self.rows_per_request], kind == "chat"))
        slots = asyncio.Semaphore(self.concurrency)
        opts = pipeline.Options(score=self.options, timeout_is_rows_error=True)
        info = pipeline.RunInfo()

        async def score(group: list[Item], chat: bool) -> None:
            async with slots:
                await pipeline.score_items(self.sender, group, chat, opts, info)

        try:
            async with asyncio.TaskGroup() as tasks:
                for group, chat in groups:
                    tasks.create_task(score(group, chat))
        except* pipeline.Fatal as fatal:
            raise RuntimeError(f"lmscore: scoring stopped: {fatal.exceptions[0]}") from None
        return with_scores(block, items, self.options, self.rows)


class RemoteScorer(_BlockScorer):
    """Scores blocks on running lmscore servers (``Servers``), spreading requests over
    them and failing over when one dies, overloads (429) or drains (503)."""

    def __init__(
        self,
        servers: Servers,
        options: ScoreOptions | None = None,
        rows: RowFormat | None = None,
        rows_per_request: int = 32,
        concurrency: int = 4,
    ) -> None:
        self.failover = FailoverSender.of(servers)
        super().__init__(self.failover, options, rows, rows_per_request, concurrency)


class InProcessScorer(_BlockScorer):
    """Scores blocks on an lmscore engine this actor loads itself (``InProcess``): the
    same batching and the same numbers as a server, with no server. Needs the ``lmscore``
    server package (torch, transformers) on the workers."""

    def __init__(
        self,
        target: InProcess,
        options: ScoreOptions | None = None,
        rows: RowFormat | None = None,
        rows_per_request: int = 32,
        concurrency: int = 4,
    ) -> None:
        from service.embedded import EmbeddedEngine  # the one public entry point

        self.engine = EmbeddedEngine.start(**dict(target.settings))
        sender = EmbeddedSender(self.engine)
        super().__init__(sender, options, rows, rows_per_request, concurrency)


def check_columns(options: ScoreOptions) -> ScoreOptions:
    """``options``, unless they ask for what the Ray output has no column for (ValueError):
    asked for, per-token and per-word results would be fetched and then dropped."""
    words = options.distribution is not None and options.distribution.words
    if options.return_tokens or words:
        raise ValueError(
            "per-token (return_tokens) and per-word (words) results have no column in "
            "the Ray output; score those rows with Client or score-file"
        )
    return options


def as_arrow(batch: Any) -> pa.Table:
    """A Ray Data batch as a pyarrow table: pyarrow as it is, a pandas DataFrame without
    its index, a dict of columns (numpy arrays or lists) column by column."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({name: _arrow_column(values) for name, values in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)


def _arrow_column(values: Any) -> pa.Array:
    """One column of a numpy batch. Its object columns mark a missing value as NaN, as
    pandas does (Ray's numpy batches hold a text column with nulls so): those are nulls,
    not floats among strings."""
    holds_objects = getattr(getattr(values, "dtype", None), "kind", None) == "O"
    return pa.array(list(values), from_pandas=holds_objects)
