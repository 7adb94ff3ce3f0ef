"""``lmscore-client calibrate``: score reference rows and write a reference profile (the
metric's quantiles, model, revision) for ``lmscore serve --reference NAME=PROFILE.json``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lmscore_client import pipeline
from lmscore_client.build import Distribution, ScoreOptions
from lmscore_client.client import AsyncClient
from lmscore_client.errors import LMScoreError
from lmscore_client.profile import build_profile
from lmscore_client.results import ModelCard
from lmscore_client.scorefile import STREAM  # '-': the profile goes to standard output
from lmscore_client.summary import ENTROPY_METRICS, Stats, report


class Collector:
    """Keeps the metric of every scored row; counts the rest."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.stats = Stats()
        self.null = 0
        self.examples: list[str] = []

    def __call__(self, batch: pipeline.Batch) -> None:
        for item in batch.items:
            if item.kind == "blank":
                continue
            self.stats.rows += 1
            if item.result is None:
                assert item.error is not None
                self.stats.rejected += 1
                if len(self.examples) < 5:
                    self.examples.append(f"  line {item.line_no}: {item.error.get('message')}")
                continue
            self.stats.tokens += item.result.num_scored_tokens
            value = item.result.metric(self.metric)
            if value is None:
                self.null += 1
                self.stats.dropped += 1
            else:
                self.stats.values.append(value)
                self.stats.kept += 1


def calibrate(args: argparse.Namespace) -> int:
    """Run the subcommand; the exit status (0 written, 1 failed, 2 refused arguments,
    130 interrupted)."""
    if not Path(args.input).is_file():
        print(f"lmscore-client: no input file {args.input}", file=sys.stderr)
        return 2
    output = Path(args.output)
    if args.output != STREAM and not output.resolve().parent.is_dir():
        print(
            f"lmscore-client: no directory {output.parent} to write {output.name} in",
            file=sys.stderr,
        )
        return 2
    collector = Collector(args.metric)
    info = pipeline.RunInfo()
    started = time.monotonic()
    distribution = Distribution(entropy=args.metric in ENTROPY_METRICS)
    cards: list[ModelCard] = []

    async def main(lines: Iterator[bytes]) -> None:
        async with pipeline.client_from_args(args) as client:
            batches = pipeline.read_batches(
                lines,
                skip=0,
                rows_per_request=args.rows_per_request,
                text_field=args.field,
                chat_field=args.chat_field or None,
            )
            await pipeline.run(
                client,
                batches,
                collector,
                concurrency=args.concurrency,
                opts=pipeline.Options(
                    score=ScoreOptions(
                        model=args.model,
                        distribution=distribution,
                        overflow=args.overflow,
                        stride=args.stride,
                    )
                ),
                info=info,
            )
            cards.extend(await _served_models(client))

    try:
        with Path(args.input).open("rb") as lines:
            asyncio.run(main(iter(lines)))
    except pipeline.Fatal as fatal:
        print(f"lmscore-client: calibrate stopped: {fatal.error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmscore-client: calibrate interrupted; no profile written", file=sys.stderr)
        return 130
    print(
        report(collector.stats, args.metric, time.monotonic() - started, "calibrate"),
        file=sys.stderr,
    )
    if collector.examples:
        print("rejected rows (first few):\n" + "\n".join(collector.examples), file=sys.stderr)
    if len(info.revisions) > 1:
        print(
            f"lmscore-client: the model changed during the run: {info.revisions}", file=sys.stderr
        )
        return 1
    if not collector.stats.values or info.revision is None or info.model is None:
        print("lmscore-client: no row could be scored; no profile written", file=sys.stderr)
        return 1
    card = next((c for c in cards if c.id == info.model), None)
    if card is None:
        print(
            f"lmscore-client: model {info.model!r} not listed by the server: the profile does "
            "not record its dtype",
            file=sys.stderr,
        )
    profile = build_profile(
        collector.stats.values,
        model=info.model,
        revision=info.revision,
        metric=args.metric,
        source=Path(args.input).name,
        threshold_quantile=args.threshold_quantile,
        skipped=collector.null,
        dtype=card.dtype if card else None,
        backend=card.backend if card else None,
    )
    profile["rejected"] = collector.stats.rejected
    text = json.dumps(profile, indent=1) + "\n"
    if args.output == STREAM:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    where = "standard output" if args.output == STREAM else args.output
    print(
        f"profile written to {where}: {profile['count']} rows, {args.metric} threshold "
        f"{profile['threshold']:.4g} at q={args.threshold_quantile}"
        + (f", {collector.null} rows without a {args.metric} skipped" if collector.null else ""),
        file=sys.stderr,
    )
    return 0


async def _served_models(client: AsyncClient) -> list[ModelCard]:
    """The server's model cards (their dtype goes into the profile: bf16 moves bits per
    char by up to several percent against float32); none where the listing fails."""
    try:
        return await client.models()
    except LMScoreError as error:
        print(f"lmscore-client: cannot list the served models: {error}", file=sys.stderr)
        return []
