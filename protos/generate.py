"""Generate the Python code of the contract into conveyor/v1/ (committed).

    python protos/generate.py            # write conveyor/v1/
    python protos/generate.py --out DIR  # write DIR/conveyor/v1/ (the drift test uses it)

Messages get .pyi stubs from mypy-protobuf; google/rpc comes from
googleapis-common-protos at run time (the vendored copy is only for buf and protoc).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent
PACKAGE_DIR = Path("conveyor") / "v1"


def generate(out: Path) -> list[Path]:
    target = out / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{PROTOS / 'vendor'}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text('"""Generated from protos/conveyor/v1 by protos/generate.py. Do not edit."""\n')
    return sorted(p for p in target.iterdir() if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args()
    if ns.out == ROOT:
        shutil.rmtree(ROOT / PACKAGE_DIR, ignore_errors=True)
    for path in generate(ns.out):
        print(path.relative_to(ns.out))


if __name__ == "__main__":
    main()
