"""Regenerate the committed Python stubs from proto/imagesieve/v1/*.proto.

    python proto/generate.py            # writes client/imagesieve/v1/
    python proto/generate.py --out DIR  # writes DIR/imagesieve/v1/ (drift test)

Stubs are committed so the light client installs without grpcio-tools;
tests/test_proto_stubs.py fails when they drift from the .proto files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(PROTO_ROOT.glob("imagesieve/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *map(str, protos)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    pkg = out / "imagesieve" / "v1"
    (pkg / "__init__.py").write_text('"""Generated gRPC stubs for imagesieve.v1 (see proto/generate.py)."""\n')
    return sorted(pkg.iterdir())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "client")
    for p in generate(ap.parse_args().out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
