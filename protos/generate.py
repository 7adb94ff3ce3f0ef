"""Generate the Python gRPC code for protos/ into service/api/pb/ (``make proto``).

The .proto is mapped to the virtual path ``service/api/pb/`` so the generated modules
import each other as ``service.api.pb.lmscore.v1``. The output is committed and must
never be edited by hand; tests/unit/api/test_proto_fresh.py fails when it is stale.

    python protos/generate.py [OUT_DIR]   # OUT_DIR defaults to the repository root
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIRTUAL = "service/api/pb"
PROTOS = ["lmscore/v1/scoring.proto"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) and return the files written under ``out_dir``."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{VIRTUAL}={ROOT / 'protos'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"{VIRTUAL}/{proto}" for proto in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((out_dir / VIRTUAL).rglob("*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path.relative_to(target))
