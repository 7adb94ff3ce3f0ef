"""The ``lmscore`` command: ``lmscore serve [flags]``.

Flags are generated from ``Settings`` (one per field, same docstring), so a flag, its
``LMSCORE_*`` env var and its default never drift apart. Flags win over env vars.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from service.settings import Settings

log = logging.getLogger("service.cli")

REPEATABLE = {
    "model": "NAME=SPEC",
    "api_keys": "KEY",
    "reference": "NAME=PROFILE.json",
    "cors_allow_origin": "ORIGIN",
}
FLAG_NAMES = {"model": "--model", "api_keys": "--api-key"}
ENV_PREFIX = "LMSCORE_"
# The client's variables (lmscore-client, the Python clients): not the server's business.
CLIENT_ENV = {"LMSCORE_URL", "LMSCORE_API_KEY"}


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _add_field(parser: argparse.ArgumentParser, name: str, info: Any) -> None:
    help_text = (info.description or "").replace("%", "%%") + f" [env {ENV_PREFIX}{name.upper()}]"
    annotation = info.annotation
    if name in REPEATABLE:
        parser.add_argument(
            _flag(name), dest=name, action="append", metavar=REPEATABLE[name], help=help_text
        )
    elif annotation is bool or annotation == (bool | None):
        parser.add_argument(
            _flag(name),
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
    else:
        choices = get_args(annotation) if "Literal" in str(get_origin(annotation)) else None
        parser.add_argument(_flag(name), dest=name, choices=choices, default=None, help=help_text)


def _version() -> str:
    try:
        return importlib.metadata.version("lmscore")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """``lmscore`` with its ``serve`` subcommand."""
    parser = argparse.ArgumentParser(prog="lmscore", description="Language-model scoring service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="Serve models over REST and gRPC.",
        description="Flags override LMSCORE_* environment variables.",
    )
    prepare = sub.add_parser(
        "prepare",
        help="Resolve and cache the models (dequantize GGUF files) without serving.",
        description="Useful in image builds: a later `serve` then loads in seconds.",
    )
    for name, info in Settings.model_fields.items():
        _add_field(serve, name, info)
        if name in ("model", "cache_dir", "log_level"):
            _add_field(prepare, name, info)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from env vars, overridden by the flags that were given."""
    given = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    return Settings(**given)


def warn_about_env(environ: Mapping[str, str], settings: Settings) -> None:
    """Log ``LMSCORE_*`` variables the server does not read (a typo would otherwise leave
    a limit at its default without a word), and the client's key variable when the
    server itself has no keys."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for variable in sorted(environ):
        # Read whatever its case (pydantic-settings), so compared in upper case.
        if variable.upper().startswith(ENV_PREFIX) and variable.upper() not in known | CLIENT_ENV:
            log.warning("ignoring %s: no setting of that name (see lmscore serve --help)", variable)
    if "LMSCORE_API_KEY" in environ and not settings.all_api_keys():
        log.warning(
            "LMSCORE_API_KEY is the client's variable: the server takes its keys from "
            "LMSCORE_API_KEYS (comma-separated) or --api-keys-file, and has none"
        )


def prepare(settings: Settings) -> int:
    """Resolve every model into the cache and print where it lives."""
    from service.models import ModelSpecError, checked_specs, resolve

    try:
        for spec in checked_specs(settings):
            resolved = resolve(spec, settings.cache_dir)
            print(f"{resolved.name}\t{resolved.revision}\t{resolved.path}")
    except ModelSpecError as exc:
        print(f"lmscore: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscore`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"lmscore: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    warn_about_env(os.environ, settings)
    if args.command == "prepare":
        return prepare(settings)
    from service.server import serve

    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
