"""``lmscore-client``: score JSONL files and calibrate reference profiles over REST, and
score corpora on a Ray cluster (``ray-score``).

Exit status: 0 done, 1 stopped early (server down or refusing the run; OUT stays valid and
``--resume`` continues) or no row could be scored, 2 bad arguments, missing input or an
output that cannot be written or resumed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from lmscore_client.rayscore import add_parser as add_ray_parser
from lmscore_client.rayscore import ray_score
from lmscore_client.summary import EXTRA_FIELDS, METRICS


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _quantile(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {number}")
    return number


def _ppl(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 1.0:  # exp(mean NLL) >= 1
        raise argparse.ArgumentTypeError(f"must be a finite PPL of at least 1, got {value}")
    return number


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must start with http:// or https://, got {value!r}")
    return value


def _common(p: argparse.ArgumentParser, concurrency: int) -> None:
    p.add_argument("-o", "--output", required=True, help="output file ('-' for standard output)")
    p.add_argument(
        "--url",
        type=_url,
        default=os.environ.get("LMSCORE_URL", "http://127.0.0.1:8000"),
        help="server base URL (default $LMSCORE_URL or http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--model",
        help="served model name (default: the server's model named default, or its only one)",
    )
    p.add_argument("--field", default="text", help="the rows' text field (default: text)")
    p.add_argument(
        "--chat-field",
        default="messages",
        help="rows with this field (a list of {role, content}) are scored as chats "
        "(default: messages; '' to disable)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive,
        default=concurrency,
        help=f"requests in flight (default {concurrency})",
    )
    p.add_argument(
        "--rows-per-request", type=_positive, default=16, help="rows per request (default 16)"
    )
    p.add_argument(
        "--overflow",
        choices=("error", "truncate", "sliding_window"),
        default="error",
        help="a text longer than the model's context: refused (error, the default; the row "
        "gets score_error), its first tokens scored (truncate; rows get truncated: true), "
        "or every token scored in windows that advance by --stride tokens (sliding_window)",
    )
    p.add_argument(
        "--stride", type=_positive, default=None, help="tokens per window step (sliding_window)"
    )
    p.add_argument("--api-key", default=None, help="API key (default $LMSCORE_API_KEY)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per HTTP attempt (default 300)"
    )
    p.add_argument(
        "--max-attempts",
        type=_positive,
        default=5,
        help="tries per request on 429/503/504/connection errors, with backoff (default 5)",
    )


def _field_groups(value: str) -> list[str]:
    groups = [g.strip() for g in value.split(",") if g.strip()]
    unknown = [g for g in groups if g not in EXTRA_FIELDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown field group {', '.join(unknown)} (known: {', '.join(EXTRA_FIELDS)})"
        )
    return groups


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmscore-client", description="Client of an lmscore scoring server."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sf = sub.add_parser(
        "score-file",
        help="score a JSONL file; rows come back in order with the scores added",
        description="Stream IN.jsonl through the server and write every row, in input "
        "order, with ppl, mean_nll, bits_per_byte, bits_per_char and num_scored_tokens "
        "added. A row that cannot be scored comes back with null scores and score_error "
        "(and goes to the rejects file too); blank lines are skipped.",
    )
    sf.add_argument("input", metavar="IN.jsonl", help="input rows ('-': standard input)")
    _common(sf, concurrency=4)
    sf.add_argument("--max-ppl", type=_ppl, default=None, help="keep rows with ppl <= X")
    sf.add_argument("--min-ppl", type=_ppl, default=None, help="keep rows with ppl >= X")
    sf.add_argument(
        "--resume", action="store_true", help="skip the input rows already done (see OUT.progress)"
    )
    sf.add_argument(
        "--reference",
        default=None,
        help="server-side reference profile: adds percentile, is_outlier",
    )
    sf.add_argument(
        "--rejects", default=None, help="file for refused rows (default OUT.rejects.jsonl)"
    )
    sf.add_argument(
        "--fields",
        type=_field_groups,
        default=[],
        metavar="GROUPS",
        help="comma-separated extra scores to add: entropy (mean_entropy, "
        "entropy_bits_per_char), min_k (min_k_logprob, min_k_plus_plus)",
    )
    sf.add_argument(
        "--min-k-percent", type=float, default=20.0, help="k for --fields min_k (default 20)"
    )
    sf.add_argument(
        "--compare-model",
        default=None,
        metavar="NAME",
        help="a second served model: text rows also get compare_ppl, compare_bits_per_byte, "
        "compare_bits_per_char and bits_per_byte_ratio (--model's over NAME's)",
    )
    sf.add_argument("--plot", default=None, metavar="FILE.png", help="histogram (needs matplotlib)")
    sf.add_argument(
        "--metric",
        choices=METRICS,
        default="ppl",
        help="metric of the summary and plot (default ppl)",
    )

    cal = sub.add_parser(
        "calibrate",
        help="write a reference profile from reference rows",
        description="Score REF.jsonl and write the metric's quantiles (0.00..1.00), the "
        "model and its revision as a profile for `lmscore serve --reference NAME=PROFILE.json`.",
    )
    cal.add_argument("input", metavar="REF.jsonl")
    _common(cal, concurrency=4)
    cal.add_argument(
        "--metric", choices=METRICS, default="bits_per_char", help="default bits_per_char"
    )
    cal.add_argument(
        "--threshold-quantile",
        type=_quantile,
        default=0.99,
        help="quantile used as the outlier threshold (default 0.99)",
    )
    add_ray_parser(sub, _positive, _field_groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "score-file":
        if args.min_ppl is not None and args.max_ppl is not None and args.min_ppl > args.max_ppl:
            print("lmscore-client: --min-ppl is above --max-ppl", file=sys.stderr)
            return 2
        from lmscore_client.scorefile import score_file

        return score_file(args)
    if args.command == "ray-score":
        return ray_score(args)
    from lmscore_client.calibrate import calibrate

    return calibrate(args)


if __name__ == "__main__":
    sys.exit(main())
