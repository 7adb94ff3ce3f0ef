"""Generate the Python gRPC code for protos/ into service/api/pb/ (``make proto``).

protoc runs on the canonical path ``lmscore/v1/scoring.proto``, so the descriptor the
server registers (and reflection serves) has the name every other client generates;
the one import between the generated modules is then pointed at ``service.api.pb``.
The output is committed and never edited by hand; tests/unit/api/test_proto_fresh.py
fails when it is stale.

    python protos/generate.py [OUT_DIR]   # OUT_DIR defaults to the repository root
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "service.api.pb"
# The light client ships its own identical copy (same descriptor, other import path).
CLIENT_PACKAGE = "lmscore_client._pb"
CLIENT_ROOT = "clients/python"
PROTOS = ["lmscore/v1/scoring.proto"]


def generate_all(root: Path) -> list[Path]:
    """The server's and the client's generated code under ``root`` (a repository layout)."""
    return generate(root) + generate(root / CLIENT_ROOT, CLIENT_PACKAGE)


def generate(out_dir: Path, package: str = PACKAGE) -> list[Path]:
    """Run protoc (grpcio-tools) and return the files written under ``out_dir``."""
    from importlib import resources

    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    target = out_dir / package.replace(".", "/")
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        for source in sorted(Path(tmp).rglob("*_pb2*.py*")):
            relative = source.relative_to(tmp)
            text = source.read_text()
            for proto in PROTOS:
                module = proto.removesuffix(".proto").replace("/", ".")
                parent, _, name = module.rpartition(".")
                text = text.replace(
                    f"from {parent} import {name}_pb2", f"from {package}.{parent} import {name}_pb2"
                )
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text)
            written.append(destination)
    return written


if __name__ == "__main__":
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate_all(base):
        print(path.relative_to(base))
