"""The committed gRPC code under service/api/pb is exactly what protos/generate.py produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "service" / "api" / "pb"
EXPECTED = {"scoring_pb2.py", "scoring_pb2.pyi", "scoring_pb2_grpc.py"}


def load_generator() -> ModuleType:
    """protos/ is not a package: load generate.py from its path."""
    spec = importlib.util.spec_from_file_location(
        "protos_generate", ROOT / "protos" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_files(base: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in base.rglob("*_pb2*.py*")
        if "__pycache__" not in path.parts and path.suffix in {".py", ".pyi"}
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.generate(tmp_path)
    out = tmp_path / generator.PACKAGE.replace(".", "/")
    fresh = generated_files(out)
    assert {Path(p).name for p in fresh} == EXPECTED
    assert sorted(written) == sorted(out / p for p in fresh)
    committed = generated_files(COMMITTED)
    stale = sorted(p for p in fresh.keys() | committed.keys() if fresh.get(p) != committed.get(p))
    assert not stale, (
        f"generated gRPC code in service/api/pb differs from protos/ ({', '.join(stale)}): "
        "run `make proto` and commit the result"
    )


def test_client_copy_is_fresh(tmp_path: Path) -> None:
    generator = load_generator()
    generator.generate(tmp_path, generator.CLIENT_PACKAGE)
    package = generator.CLIENT_PACKAGE.replace(".", "/")
    fresh = generated_files(tmp_path / package)
    committed = generated_files(ROOT / generator.CLIENT_ROOT / package)
    assert {Path(p).name for p in fresh} == EXPECTED
    stale = sorted(p for p in fresh.keys() | committed.keys() if fresh.get(p) != committed.get(p))
    assert not stale, f"the client's gRPC code is stale ({', '.join(stale)}): run `make proto`"
