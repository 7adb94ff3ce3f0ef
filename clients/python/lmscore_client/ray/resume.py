"""Resuming a killed run with every row written exactly once.

Two ways, picked by ``checkpoint_mode``:

- ``ray``: Ray Data's own checkpointing (``ray.data.checkpoint``, Ray 2.5x and newer). Each
  output file is committed in two phases (a pending checkpoint of its row ids, the file, then
  the commit), and a rerun filters out committed ids as it reads the input. Preferred where
  the installed Ray has it: it also cleans up a file half-written when the job died.
- ``files``: our own skip-what-is-written, for a Ray without it. Each block is written to a
  temporary name and renamed into place, so a file in the output directory is complete; a
  rerun reads the ids of those files and leaves those rows out.

Both need a column that identifies rows (``--id-field``), unique across the input.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import ray.data

Mode = Literal["ray", "files"]
Format = Literal["parquet", "jsonl"]
_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl"}


def ray_has_checkpointing() -> bool:
    """Whether the installed Ray Data has its own checkpointing."""
    return importlib.util.find_spec("ray.data.checkpoint") is not None


def checkpoint_mode(asked: Literal["auto", "ray", "files"]) -> Mode:
    """``auto`` is Ray's own checkpointing where the installed Ray has it."""
    if asked == "auto":
        return "ray" if ray_has_checkpointing() else "files"
    if asked == "ray" and not ray_has_checkpointing():
        raise ValueError("this Ray has no ray.data.checkpoint; use --checkpoint files")
    return asked


def enable_ray_checkpoints(id_field: str, checkpoint_dir: Path) -> None:
    """Turn on Ray Data's checkpointing for the jobs this driver runs next. Checkpoints
    are kept after success, so rerunning a finished job writes nothing twice."""
    import ray.data
    from ray.data.checkpoint import CheckpointConfig

    ray.data.DataContext.get_current().checkpoint_config = CheckpointConfig(
        id_column=id_field,
        checkpoint_path=str(checkpoint_dir.resolve()),
        delete_checkpoint_on_success=False,
    )


def committed_files(out_dir: Path, fmt: Format) -> list[Path]:
    """The complete output files (``files`` mode), after deleting temporaries a killed run
    left behind."""
    if not out_dir.exists():
        return []
    for stale in out_dir.glob(".*.tmp"):
        stale.unlink()
    return sorted(out_dir.glob(f"*{_SUFFIX[fmt]}"))


def written_ids(out_dir: Path, fmt: Format, id_field: str) -> pa.Array:
    """The ids in the complete output files (``files`` mode)."""
    chunks = []
    for path in committed_files(out_dir, fmt):
        table = (
            pq.read_table(path, columns=[id_field])
            if fmt == "parquet"
            else pa_json.read_json(path).select([id_field])
        )
        chunks.extend(table.column(id_field).chunks)
    if not chunks:
        return pa.array([])
    return pa.chunked_array(chunks).combine_chunks()


def skip_written(ds: ray.data.Dataset, id_field: str, done: pa.Array) -> ray.data.Dataset:
    """``ds`` without the rows whose id is in ``done``."""
    if len(done) == 0:
        return ds

    def unwritten(block: pa.Table) -> pa.Table:
        return block.filter(pc.invert(pc.is_in(block.column(id_field), value_set=done)))

    return ds.map_batches(unwritten, batch_format="pyarrow", batch_size=None)


class ShardWriter:
    """Writes each block to its own file in ``out_dir`` (``files`` mode): a temporary name
    first, then an atomic rename, so a file there is always complete. Returns the block's
    ids, which is what the run collects."""

    def __init__(self, out_dir: Path, fmt: Format, id_field: str) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.id_field = id_field

    def __call__(self, block: pa.Table) -> pa.Table:
        if block.num_rows == 0:
            return block.select([self.id_field])
        name = f"part-{uuid.uuid4().hex}{_SUFFIX[self.fmt]}"
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp"
        if self.fmt == "parquet":
            pq.write_table(block, tmp)
        else:
            with tmp.open("wb") as f:
                for batch in block.to_batches():
                    f.write(_jsonl(batch))
        os.replace(tmp, final)
        return block.select([self.id_field])


def _jsonl(batch: pa.RecordBatch) -> bytes:
    lines = (json.dumps(row, ensure_ascii=False) for row in batch.to_pylist())
    return "".join(f"{line}\n" for line in lines).encode("utf-8")
