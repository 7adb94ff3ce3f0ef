"""The corpus job behind ``lmscore-client ray-score``: read, score, keep a band, write."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from lmscore_client.build import Distribution, ScoreOptions
from lmscore_client.ray import resume
from lmscore_client.ray.columns import RowFormat
from lmscore_client.ray.dataset import score_dataset
from lmscore_client.ray.scorer import InProcess
from lmscore_client.ray.senders import Servers

EXIT_CANNOT_RESUME = 2  # as for bad arguments: nothing was scored

Band = dict[str, tuple[float | None, float | None]]


@dataclass(frozen=True)
class JobSpec:
    """Everything one run needs; ``band`` keeps rows whose metric lies in [low, high]
    (either end open); a row the server refused is kept with its error, whatever the band."""

    inputs: Sequence[str]
    output: Path
    fmt: resume.Format
    target: Servers | InProcess
    options: ScoreOptions = field(default_factory=ScoreOptions)
    rows: RowFormat = field(default_factory=RowFormat)
    band: Band = field(default_factory=dict)
    actors: int = 1
    batch_size: int = 256
    rows_per_request: int = 32
    concurrency: int = 4
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    checkpoint: Literal["auto", "ray", "files", "off"] = "auto"
    checkpoint_dir: Path = Path("checkpoint")


def target_of(
    *,
    urls: Sequence[str],
    grpc: bool,
    resolve_dns: bool,
    api_key: str | None,
    in_process: dict[str, Any] | None,
) -> Servers | InProcess:
    if in_process is not None:
        return InProcess(in_process)
    return Servers(
        list(urls), protocol="grpc" if grpc else "http", api_key=api_key, resolve_dns=resolve_dns
    )


def options_of(
    model: str | None, reference: str | None, field_groups: Sequence[str]
) -> ScoreOptions:
    distribution = None
    if field_groups:
        distribution = Distribution(
            entropy="entropy" in field_groups, min_k="min_k" in field_groups
        )
    return ScoreOptions(model=model, reference=reference, distribution=distribution)


def rows_of(text_field: str, chat_field: str | None, id_field: str) -> RowFormat:
    return RowFormat(text_field=text_field, chat_field=chat_field, id_field=id_field)


def _read(inputs: Sequence[str]) -> Any:
    import ray.data

    parquet = [p for p in inputs if p.endswith(".parquet")]
    if parquet and len(parquet) != len(inputs):
        raise ValueError("give either Parquet or JSONL inputs, not both")
    return ray.data.read_parquet(list(inputs)) if parquet else ray.data.read_json(list(inputs))


def keep_band(block: pa.Table, band: Band, error_column: str) -> pa.Table:
    """The rows of ``block`` inside ``band``, and every row with an error."""
    keep = pc.is_valid(block.column(error_column))
    inside = pa.scalar(True)
    for metric, (low, high) in band.items():
        values = block.column(metric)
        if low is not None:
            inside = pc.and_kleene(inside, pc.greater_equal(values, low))
        if high is not None:
            inside = pc.and_kleene(inside, pc.less_equal(values, high))
    return block.filter(pc.or_kleene(keep, pc.fill_null(inside, False)))


def _checkpointing(spec: JobSpec, schema_names: Sequence[str]) -> resume.Mode | None:
    if spec.checkpoint == "off":
        return None
    if spec.rows.id_field is None or spec.rows.id_field not in schema_names:
        print(
            f"warning: the input has no {spec.rows.id_field!r} column: this run cannot be "
            "resumed (--id-field names one)",
            file=sys.stderr,
        )
        return None
    return resume.checkpoint_mode(spec.checkpoint)


def run(spec: JobSpec, address: str | None = None) -> int:
    """Run the job on the Ray cluster at ``address`` (a local one when there is none)."""
    import ray

    if not ray.is_initialized():
        _connect(ray, address)
    started = time.monotonic()
    mode = _checkpointing(spec, _read(spec.inputs).schema().names)
    if mode is None and spec.output.exists() and any(spec.output.iterdir()):
        print(
            f"lmscore-client: {spec.output} already holds rows, and without an id column "
            "(or with --checkpoint off) this run cannot tell which: it would write them "
            "again. Remove it, or give the input an id column (--id-field).",
            file=sys.stderr,
        )
        return EXIT_CANNOT_RESUME
    spec.output.mkdir(parents=True, exist_ok=True)
    if mode == "ray":  # before the dataset is made: it keeps the context it was made in
        resume.enable_ray_checkpoints(str(spec.rows.id_field), spec.checkpoint_dir)
    ds = _read(spec.inputs)
    if mode == "files":
        done = resume.written_ids(spec.output, spec.fmt, str(spec.rows.id_field))
        if len(done):
            print(f"resuming: {len(done)} rows already written", file=sys.stderr)
        ds = resume.skip_written(ds, str(spec.rows.id_field), done)
    ds = score_dataset(
        ds,
        spec.target,
        options=spec.options,
        rows=spec.rows,
        actors=spec.actors,
        batch_size=spec.batch_size,
        rows_per_request=spec.rows_per_request,
        concurrency=spec.concurrency,
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus,
    )
    if spec.band:
        in_band = functools.partial(keep_band, band=spec.band, error_column=spec.rows.error_column)
        ds = ds.map_batches(in_band, batch_format="pyarrow", batch_size=None)
    _write(ds, spec, mode)
    print(f"scored into {spec.output} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one."""
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
        return
    # Ray's checkpoint filter actor reserves a whole logical CPU; with it, a scorer and a
    # reader on a 2-core machine the job would wait forever for a free CPU. The scorers
    # mostly wait on I/O, so a local cluster gets at least 4 logical CPUs.
    ray.init(num_cpus=max(4, os.cpu_count() or 1))


def _write(ds: Any, spec: JobSpec, mode: resume.Mode | None) -> None:
    if mode == "files":
        writer = resume.ShardWriter(spec.output, spec.fmt, str(spec.rows.id_field))
        ds.map_batches(writer, batch_format="pyarrow", batch_size=None).materialize()
    elif spec.fmt == "parquet":
        ds.write_parquet(str(spec.output))
    else:
        ds.write_json(str(spec.output))
