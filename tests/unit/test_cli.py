"""CLI flags and LMSCORE_* env vars -> Settings; --model parsing; weight revisions."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from service import cli
from service.cli import REPEATABLE, build_parser, settings_from_args
from service.models import (
    ModelSpec,
    ModelSpecError,
    _directory_revision,
    file_sha256,
    parse_model_args,
    resolve,
)
from service.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LMSCORE_"):
            monkeypatch.delenv(name)


def settings(*flags: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *flags]))


def test_defaults_without_flags_or_env() -> None:
    s = settings()
    assert s.model == [] and s.api_keys == []
    assert (s.dtype, s.device, s.backend) == ("auto", "auto", "transformers")
    assert (s.http_port, s.grpc_port, s.host) == (8000, 50051, "127.0.0.1")
    assert s.max_context is None


def test_flags_map_to_fields() -> None:
    s = settings(
        "--max-batch-tokens", "1234",
        "--max-batch-size", "7",
        "--model", "a=default",
        "--model", "b=/models/b",
        "--dtype", "bfloat16",
        "--device", "cpu",
        "--http-port", "0",
        "--max-context", "128",
        "--request-timeout-s", "2.5",
        "--max-texts-per-request", "3",
        "--max-body-bytes", "4096",
        "--api-key", "k1",
        "--api-key", "k2",
        "--log-level", "debug",
    )  # fmt: skip
    assert s.max_batch_tokens == 1234 and s.max_batch_size == 7
    assert s.model == ["a=default", "b=/models/b"]
    assert s.dtype == "bfloat16" and s.device == "cpu"
    assert s.http_port == 0 and s.max_context == 128
    assert s.request_timeout_s == 2.5
    assert s.max_texts_per_request == 3 and s.max_body_bytes == 4096
    assert s.api_keys == ["k1", "k2"] and s.all_api_keys() == ["k1", "k2"]
    assert s.log_level == "debug"


def test_every_list_field_takes_its_flag_repeated() -> None:
    """A flag whose help says it is repeatable keeps every value, not the last."""
    s = settings("--cors-allow-origin", "http://a", "--cors-allow-origin", "http://b")
    assert s.cors_allow_origin == ["http://a", "http://b"]
    assert settings("--cors-allow-origin", "http://a,http://b").cors_allow_origin == [
        "http://a",
        "http://b",
    ]
    for name, info in Settings.model_fields.items():
        if "repeatable" in (info.description or ""):
            assert name in REPEATABLE, name


def test_every_field_has_a_flag_with_help() -> None:
    serve = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["serve"]
    by_dest = {a.dest: a for a in serve._actions}
    for name in Settings.model_fields:
        assert name in by_dest, name
        assert by_dest[name].help
    assert "--max-batch-tokens" in by_dest["max_batch_tokens"].option_strings


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_dtype_choices(dtype: str) -> None:
    assert settings("--dtype", dtype).dtype == dtype


def test_bad_choice_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--dtype", "float8"])
    assert info.value.code == 2
    assert "float8" in capsys.readouterr().err


def test_bool_fields_get_on_off_flags() -> None:
    parser = argparse.ArgumentParser()
    info = FieldInfo(annotation=bool, default=False, description="A 100% switch.")
    cli._add_field(parser, "protect_metrics", info)
    assert parser.parse_args(["--protect-metrics"]).protect_metrics is True
    assert parser.parse_args(["--no-protect-metrics"]).protect_metrics is False
    assert parser.parse_args([]).protect_metrics is None  # not given: env or default decides
    for name, field in Settings.model_fields.items():
        if field.annotation is bool:
            flag = "--" + name.replace("_", "-")
            assert getattr(settings(flag), name) is True
            assert getattr(settings("--no-" + flag[2:]), name) is False


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSCORE_MAX_BATCH_TOKENS", "77")
    monkeypatch.setenv("LMSCORE_DTYPE", "float16")
    monkeypatch.setenv("LMSCORE_MODEL", "a=default,b=/x")
    monkeypatch.setenv("LMSCORE_API_KEYS", " k1 , k2 ,")
    monkeypatch.setenv("LMSCORE_REQUEST_TIMEOUT_S", "0.5")
    s = settings()
    assert s.max_batch_tokens == 77 and s.dtype == "float16"
    assert s.model == ["a=default", "b=/x"]
    assert s.api_keys == ["k1", "k2"]
    assert s.request_timeout_s == 0.5
    assert [spec.name for spec in parse_model_args(s.model)] == ["a", "b"]


def test_flags_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSCORE_MAX_BATCH_TOKENS", "77")
    monkeypatch.setenv("LMSCORE_MODEL", "a=default,b=/x")
    monkeypatch.setenv("LMSCORE_DEVICE", "cuda")
    s = settings("--max-batch-tokens", "100", "--model", "c=/y")
    assert s.max_batch_tokens == 100
    assert s.model == ["c=/y"]
    assert s.device == "cuda"  # not given as a flag: the env var stays


def test_invalid_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValidationError):
        settings("--max-batch-tokens", "0")
    monkeypatch.setenv("LMSCORE_MAX_BODY_BYTES", "10")
    with pytest.raises(ValidationError):
        settings()
    monkeypatch.delenv("LMSCORE_MAX_BODY_BYTES")
    assert cli.main(["serve", "--http-port", "70000"]) == 2  # exits before serving
    assert "invalid configuration" in capsys.readouterr().err


def test_api_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# comment\n\nfile-key-1\n  file-key-2  \n")
    s = settings("--api-key", "flag-key", "--api-keys-file", str(keys))
    assert s.all_api_keys() == ["flag-key", "file-key-1", "file-key-2"]


@pytest.mark.parametrize(
    "content", ["", "# keys go here\n\n", None], ids=["empty", "comments", "missing"]
)
def test_a_keys_file_without_keys_is_refused(tmp_path: Path, content: str | None) -> None:
    # It started the server with auth off and said nothing.
    keys = tmp_path / "keys.txt"
    if content is not None:
        keys.write_text(content)
    with pytest.raises(ValidationError, match=r"keys\.txt"):
        settings("--api-keys-file", str(keys))


def test_help_names_each_flags_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in Settings.model_fields:
        assert f"[env LMSCORE_{name.upper()}]" in help_text, name


def test_unknown_env_vars_are_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"LMSCORE_MAXQUEUE": "5", "LMSCORE_MAX_QUEUE": "5", "LMSCORE_URL": "http://x",
               "LMSCORE_API_KEY": "k", "PATH": "/bin", "lmscore_max_batch_size": "8",
               "lmscore_maxbatch": "8"}  # fmt: skip
    with caplog.at_level("WARNING", logger="service.cli"):
        cli.warn_about_env(environ, Settings())
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "LMSCORE_MAXQUEUE" in warned and "LMSCORE_MAX_QUEUE:" not in warned
    assert "lmscore_maxbatch" in warned and "lmscore_max_batch_size" not in warned  # any case
    assert "LMSCORE_URL" not in warned  # the client's, on purpose
    assert "LMSCORE_API_KEYS" in warned  # the client's key variable, and the server has none
    caplog.clear()
    with caplog.at_level("WARNING", logger="service.cli"):
        cli.warn_about_env({"LMSCORE_API_KEY": "k"}, Settings(api_keys=["k"]))
    assert not caplog.records


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    # A traceback before; and gRPC shared a port whose holder allows it (SO_REUSEPORT).
    exe = Path(sys.executable).with_name("lmscore")
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for ports in (
            ["--http-port", port, "--grpc-port", "0"],
            ["--http-port", "0", "--grpc-port", port],
        ):
            done = subprocess.run(
                [str(exe), "serve", *ports], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_per_model_options() -> None:
    (fp32, bf16) = parse_model_args(
        ["fp32=default", "bf16=default?dtype=bfloat16&attention=padded&compile=on"]
    )
    assert fp32.options == () and bf16.source == "default"
    settings = Settings(dtype="float32").for_model(dict(bf16.options))
    assert (settings.dtype, settings.attention, settings.compile) == ("bfloat16", "padded", "on")
    assert Settings().compile == "off"
    assert Settings().for_model({}) == Settings()
    with pytest.raises(ModelSpecError, match="KEY=VALUE"):
        parse_model_args(["x=default?colour=blue"])
    with pytest.raises(ModelSpecError, match="KEY=VALUE"):
        parse_model_args(["x=default?dtype"])
    with pytest.raises(ValueError, match="dtype"):
        Settings().for_model({"dtype": "float8"})


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_api_key_is_refused(key: str) -> None:
    """``--api-key "$KEY"`` with KEY unset turned auth on with a key any client sends
    (``Authorization: Bearer``)."""
    with pytest.raises(ValidationError, match="empty or blank"):
        settings("--api-key", key)
    assert settings("--api-key", "  k  ").api_keys == ["k"]  # the check trims what comes in


def test_a_keys_file_saved_with_a_bom(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_bytes("\ufefffirst\r\nsecond\r\n".encode())
    assert settings("--api-keys-file", str(keys)).all_api_keys() == ["first", "second"]


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-body-bytes", str(2**30)),  # gRPC takes twice this as a C int
        ("--grpc-max-send-bytes", str(3 * 10**9)),
        ("--max-wait-ms", "inf"),
        ("--max-wait-ms", "1e13"),  # the batcher's timer overflowed, its thread died
        ("--rejoin-wait", "nan"),
        ("--rejoin-wait", "2"),  # longer than a pass: more waiting than running
    ],
)
def test_values_that_would_fail_after_start_up_are_refused(flags: tuple[str, str]) -> None:
    with pytest.raises(ValidationError):
        settings(*flags)


def test_cache_dir_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings("--cache-dir", "~/models").cache_dir == tmp_path / "models"


def test_a_name_less_spec_takes_options() -> None:
    assert parse_model_args(["default?dtype=float32"]) == [
        ModelSpec("default", "default", (("dtype", "float32"),))
    ]
    (spec,) = parse_model_args(["/models/tiny?max_context=32"])
    assert (spec.name, spec.source) == ("tiny", "/models/tiny")


def test_parse_model_args() -> None:
    assert parse_model_args([]) == [ModelSpec("default", "default")]
    assert parse_model_args(["default"]) == [ModelSpec("default", "default")]
    assert parse_model_args(["small=/models/small", " big = org/big@v2 "]) == [
        ModelSpec("small", "/models/small"),
        ModelSpec("big", "org/big@v2"),
    ]
    assert parse_model_args(["/models/tiny-llama"]) == [
        ModelSpec("tiny-llama", "/models/tiny-llama")
    ]
    with pytest.raises(ModelSpecError, match="twice"):
        parse_model_args(["a=/x", "a=/y"])
    for bad in ("=/x", "a=", "="):
        with pytest.raises(ModelSpecError):
            parse_model_args([bad])


def test_directory_revision_of_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    first = _directory_revision(tiny_model_dir, cache)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert first == f"sha256:{expected}"
    assert _directory_revision(tiny_model_dir, cache) == first  # from the cache now
    assert _directory_revision(tiny_model_dir, tmp_path / "other-cache") == first
    assert file_sha256(weights, cache) == expected
    assert expected in json.loads((cache / "sha256.json").read_text()).values()
    resolved = resolve(ModelSpec("tiny", str(tiny_model_dir)), cache)
    assert (resolved.name, resolved.path, resolved.revision) == ("tiny", tiny_model_dir, first)


def test_revision_of_several_weight_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "b.safetensors").write_bytes(b"second")
    (model / "a.bin").write_bytes(b"first")
    (model / "config.json").write_text("{}")  # not a weights file
    digests = [hashlib.sha256(b"first").hexdigest(), hashlib.sha256(b"second").hexdigest()]
    combined = f"{digests[0]}  a.bin\n{digests[1]}  b.safetensors\n"
    expected = "sha256:" + hashlib.sha256(combined.encode()).hexdigest()
    assert _directory_revision(model, tmp_path / "cache") == expected


def test_file_sha256_notices_changes(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    cache = tmp_path / "cache"
    assert file_sha256(weights, cache) == hashlib.sha256(b"one").hexdigest()
    weights.write_bytes(b"two, longer")
    assert file_sha256(weights, cache) == hashlib.sha256(b"two, longer").hexdigest()


def test_directory_without_weights_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no weights"):
        _directory_revision(tmp_path, tmp_path / "cache")
    with pytest.raises(ModelSpecError, match="not a directory"):
        resolve(ModelSpec("x", str(tmp_path / "missing")), tmp_path / "cache")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"lmscore \S+\n", capsys.readouterr().out)


def test_a_bad_model_is_refused_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The second model's missing path, or a bad value of its options, stops start-up at
    once (exit 2, naming the spec), not after the first model has loaded."""
    missing = str(tmp_path / "nope")
    for flags in (
        ["--model", "a=default", "--model", f"b={missing}"],
        ["--model", "a=default", "--model", "b=default?dtype=fp8"],
    ):
        caplog.clear()
        assert cli.main(["serve", "--http-port", "0", "--grpc-port", "0", *flags]) == 2
        assert "--model b=" in caplog.text
        assert cli.main(["prepare", *flags]) == 2
        assert "--model b=" in capsys.readouterr().err
