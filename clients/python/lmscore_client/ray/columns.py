"""Rows in, score columns out: what the Ray scorers add to a block (pure pyarrow, no I/O).

Every block gets the same columns with the same types, whatever it holds, so shards written
by different workers read back as one table. Units as the API's: ``sum_logprob`` and
``mean_nll`` in nats, ``bits_per_byte``/``bits_per_char`` in bits, ``ppl`` = exp(mean_nll).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lmscore_client.build import ScoreOptions
from lmscore_client.pipeline import Item, classify_row, row_param
from lmscore_client.results import TextResult

_BASE = {
    "num_tokens": pa.int64(),
    "num_scored_tokens": pa.int64(),
    "sum_logprob": pa.float64(),
    "mean_nll": pa.float64(),
    "ppl": pa.float64(),
    "bits_per_byte": pa.float64(),
    "bits_per_char": pa.float64(),
    "truncated": pa.bool_(),
}
_REFERENCE = {"percentile": pa.float64(), "is_outlier": pa.bool_()}
_ENTROPY = {"mean_entropy": pa.float64(), "entropy_bits_per_char": pa.float64()}
_MIN_K = {"min_k_logprob": pa.float64(), "min_k_plus_plus": pa.float64()}
MESSAGE_SCORES = pa.list_(
    pa.struct(
        [
            ("index", pa.int64()),
            ("role", pa.string()),
            ("scored", pa.bool_()),
            ("num_scored_tokens", pa.int64()),
            ("sum_logprob", pa.float64()),
            ("mean_nll", pa.float64()),
            ("ppl", pa.float64()),
        ]
    )
)
ERROR = pa.struct(
    [
        ("status", pa.int64()),
        ("type", pa.string()),
        ("message", pa.string()),
        ("param", pa.string()),
    ]
)


@dataclass(frozen=True)
class RowFormat:
    """Where a row's text or conversation is, and what the added columns are called.

    A row is a conversation when ``chat_field`` is set and holds a list of messages, else a
    text from ``text_field``. ``id_field`` is only carried through (it identifies rows for
    resuming). Chat rows get ``message_scores`` (one entry per message); a row that could
    not be scored gets its error in ``error_column`` and null scores.
    """

    text_field: str = "text"
    chat_field: str | None = None
    id_field: str | None = "id"
    error_column: str = "score_error"
    message_scores_column: str = "message_scores"


def score_schema(options: ScoreOptions, rows: RowFormat) -> dict[str, pa.DataType]:
    """The added columns, in order, with their types."""
    schema = dict(_BASE)
    if options.reference is not None:
        schema.update(_REFERENCE)
    if options.distribution is not None and options.distribution.entropy:
        schema.update(_ENTROPY)
    if options.distribution is not None and options.distribution.min_k:
        schema.update(_MIN_K)
    if rows.chat_field is not None:
        schema[rows.message_scores_column] = MESSAGE_SCORES
    schema[rows.error_column] = ERROR
    return schema


def block_items(block: pa.Table, rows: RowFormat) -> list[Item]:
    """One ``Item`` per row of ``block`` (``line_no`` is the row's index in the block)."""
    return [
        classify_row(index, row, rows.text_field, rows.chat_field)
        for index, row in enumerate(block.to_pylist())
    ]


def payload_chars(item: Item) -> int:
    """How long a row is, in characters (its messages' contents for a conversation)."""
    if isinstance(item.payload, str):
        return len(item.payload)
    if isinstance(item.payload, list):
        return sum(len(str(m.get("content", ""))) for m in item.payload if isinstance(m, dict))
    return 0


def _messages(result: TextResult) -> list[dict[str, Any]] | None:
    if result.messages is None:
        return None
    return [dataclasses.asdict(message) for message in result.messages]


def _error(item: Item, rows: RowFormat) -> dict[str, Any] | None:
    error = item.error
    if error is None:
        return None
    return {
        "status": int(error.get("status") or 0),
        "type": str(error.get("type") or ""),
        "message": str(error.get("message") or ""),
        "param": row_param(error.get("param"), item, rows.text_field, rows.chat_field),
    }


def with_scores(
    block: pa.Table, items: Sequence[Item], options: ScoreOptions, rows: RowFormat
) -> pa.Table:
    """``block`` with the score columns appended, row for row (``items`` in block order).
    A column the block already has is replaced."""
    schema = score_schema(options, rows)
    values: dict[str, list[Any]] = {name: [] for name in schema}
    for item in items:
        result = item.result
        for name in schema:
            if name == rows.error_column:
                value: Any = _error(item, rows) if result is None else None
            elif result is None:
                value = None
            elif name == rows.message_scores_column:
                value = _messages(result)
            else:
                value = getattr(result, name)
            values[name].append(value)
    for name, data_type in schema.items():
        column = pa.array(values[name], type=data_type)
        if name in block.column_names:
            block = block.set_column(block.column_names.index(name), name, column)
        else:
            block = block.append_column(name, column)
    return block
