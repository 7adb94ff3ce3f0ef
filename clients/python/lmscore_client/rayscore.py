"""``lmscore-client ray-score``: score a corpus on a Ray cluster and write scored shards.

Reads JSONL or Parquet (files, directories or globs; any path Ray can read), scores every
row through lmscore servers (``--url``, repeatable) or an engine inside each Ray actor
(``--in-process``), optionally keeps a PPL or bits-per-char band, and writes Parquet or
JSONL shards into OUT. Progress is Ray Data's own. A killed run continues with
``--resume``; see ``lmscore_client.ray.resume`` for how each row is written exactly once.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_ARGS = 2


def add_parser(sub: Any, positive: Any, field_groups: Any) -> None:
    """The ``ray-score`` subcommand's arguments."""
    p = sub.add_parser(
        "ray-score",
        help="score a corpus on a Ray cluster (needs lmscore-client[ray])",
        description="Score JSONL/Parquet rows on a Ray cluster through lmscore servers or an "
        "in-process engine, and write Parquet/JSONL shards with the score columns added.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or globs")
    p.add_argument("-o", "--output", required=True, help="output directory")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", action="append", default=[], help="a server (repeatable)")
    where.add_argument(
        "--in-process", action="store_true", help="load the engine inside each Ray actor"
    )
    p.add_argument("--grpc", action="store_true", help="--url values are gRPC host:port targets")
    p.add_argument(
        "--resolve-dns", action="store_true", help="one endpoint per address of each --url host"
    )
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an in-process engine setting, as `lmscore serve`'s flag without dashes "
        "(dtype=float32, max_context=512, model=NAME=SPEC)",
    )
    p.add_argument(
        "--model",
        help="served model name (default: the server's model named default, or its only one)",
    )
    p.add_argument("--field", default="text", help="the rows' text field (default: text)")
    p.add_argument("--chat-field", default="", help="field of chat rows (a list of messages)")
    p.add_argument("--id-field", default="id", help="the rows' unique id (default: id)")
    p.add_argument("--reference", default=None, help="server-side reference profile")
    p.add_argument("--fields", type=field_groups, default=[], metavar="GROUPS")
    p.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    for metric in ("ppl", "bits-per-char"):
        p.add_argument(f"--min-{metric}", type=float, default=None, help=f"keep {metric} >= X")
        p.add_argument(f"--max-{metric}", type=float, default=None, help=f"keep {metric} <= X")
    p.add_argument("--actors", type=positive, default=1, help="scoring actors (default 1)")
    p.add_argument("--batch-size", type=positive, default=256, help="rows per block")
    p.add_argument("--rows-per-request", type=positive, default=32)
    p.add_argument("--concurrency", type=positive, default=4, help="requests in flight per actor")
    p.add_argument(
        "--num-cpus",
        type=float,
        default=1.0,
        help="CPUs per actor (in-process: Ray gives torch this many threads)",
    )
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (in-process)")
    p.add_argument("--api-key", default=None, help="API key (default $LMSCORE_API_KEY)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS)")
    p.add_argument("--resume", action="store_true", help="continue into a non-empty OUT")
    p.add_argument(
        "--checkpoint",
        choices=("auto", "ray", "files", "off"),
        default="auto",
        help="how a rerun skips written rows: Ray Data's checkpointing (ray), our own "
        "(files), or auto: ray where the installed Ray has it",
    )
    p.add_argument(
        "--checkpoint-dir", default=None, help="Ray checkpoints (default OUT.ray-checkpoint)"
    )


def _inputs(patterns: list[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern)) if "://" not in pattern else []
        paths.extend(matched or [pattern])
    return paths


def _engine_settings(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--engine {pair!r} is not KEY=VALUE")
        key = key.replace("-", "_")
        if key in ("model", "reference"):
            settings.setdefault(key, []).append(value)
        else:
            settings[key] = value
    return settings


def _band(args: argparse.Namespace) -> dict[str, tuple[float | None, float | None]]:
    band = {
        "ppl": (args.min_ppl, args.max_ppl),
        "bits_per_char": (args.min_bits_per_char, args.max_bits_per_char),
    }
    return {k: v for k, v in band.items() if v != (None, None)}


def _fail(message: str) -> int:
    print(f"lmscore-client: {message}", file=sys.stderr)
    return EXIT_BAD_ARGS


def ray_score(args: argparse.Namespace) -> int:
    """Run the subcommand; the exit status."""
    if not args.url and not args.in_process:
        return _fail("ray-score needs --url (repeatable) or --in-process")
    try:
        from lmscore_client.ray import job
    except ImportError as exc:
        return _fail(f"ray-score needs Ray Data: pip install 'lmscore-client[ray]' ({exc})")
    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.resume:
        return _fail(f"{out} is not empty: --resume to continue it, or remove it")
    try:
        spec = job.JobSpec(
            inputs=_inputs(args.inputs),
            output=out,
            fmt=args.format,
            target=job.target_of(
                urls=args.url,
                grpc=args.grpc,
                resolve_dns=args.resolve_dns,
                api_key=args.api_key or os.environ.get("LMSCORE_API_KEY"),
                in_process=_engine_settings(args.engine) if args.in_process else None,
            ),
            options=job.options_of(args.model, args.reference, args.fields),
            rows=job.rows_of(args.field, args.chat_field or None, args.id_field),
            band=_band(args),
            actors=args.actors,
            batch_size=args.batch_size,
            rows_per_request=args.rows_per_request,
            concurrency=args.concurrency,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            checkpoint=args.checkpoint,
            checkpoint_dir=Path(args.checkpoint_dir or f"{out}.ray-checkpoint"),
        )
    except ValueError as exc:
        return _fail(str(exc))
    return job.run(spec, address=args.address)
