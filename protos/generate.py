"""Generate the code of the contract (committed): Python into conveyor/v1/ and
TypeScript into clients/ts/src/gen/, with buf and protos/buf.gen.yaml, offline; with
the Python, conveyor/v1/descriptor_set.binpb (the descriptors WITH their comments, which
the gateway's reflection serves) and the API reference docs/api/ (protos/gen_docs.py).

    python protos/generate.py                  # write conveyor/v1/, clients/ts/src/gen/, docs/api/
    python protos/generate.py --lang python    # only the Python; --lang ts: only the TypeScript
                                               # (default: both; only the Python, with a warning,
                                               # when clients/ts/node_modules is not installed)
    python protos/generate.py --out DIR        # write DIR/conveyor/v1/, DIR/clients/ts/src/gen/, DIR/docs/api/
                                               # (the drift tests use it)

buf comes from the venv (buf-bin), its plugins from the venv (grpcio-tools' protoc
for `python`, protos/plugins/protoc_gen_grpc_python.py, mypy-protobuf) and from
clients/ts/node_modules (protoc-gen-es; `npm ci` in clients/ts installs it). The
include path is `protos/` alone: google/rpc and google/api are vendored there, the
well-known google/protobuf types come with buf. Python's google/rpc comes from
googleapis-common-protos at run time and is not written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gen_docs
import yaml
from google.protobuf import descriptor_pb2

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent
TEMPLATE = PROTOS / "buf.gen.yaml"
PY_DIR = Path("conveyor") / "v1"
TS_DIR = Path("clients") / "ts" / "src" / "gen"
PROTOC_GEN_ES = ROOT / "clients" / "ts" / "node_modules" / ".bin" / "protoc-gen-es"
#: buf.gen.yaml's `out` of each language, and where generate.py puts what it writes.
LANGS = {"python": ("python", PY_DIR), "ts": ("ts", TS_DIR)}
DESCRIPTOR_SET = PY_DIR / "descriptor_set.binpb"
DOCS_DIR = Path("docs") / "api"
PY_INIT = '"""Generated from protos/conveyor/v1 by protos/generate.py. Do not edit."""\n'


def buf_binary() -> str:
    local = Path(sys.executable).parent / "buf"
    return str(local) if local.exists() else "buf"


def template(langs: list[str]) -> str:
    """buf.gen.yaml with only the plugins of `langs` (as JSON, which buf takes inline)."""
    config: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    outs = {LANGS[lang][0] for lang in langs}
    config["plugins"] = [p for p in config["plugins"] if p["out"] in outs]
    return json.dumps(config)


def descriptor_set(path: Path) -> None:
    """conveyor/v1 and its imports as one FileDescriptorSet (self-contained: `grpcurl
    -protoset`, `buf curl --schema` take it), with the comments (source info) of
    conveyor/v1 only; written byte-for-byte the same for the same protos."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "set.binpb"
        proc = subprocess.run([buf_binary(), "build", "--as-file-descriptor-set", "--path", "conveyor/v1",
                               "-o", str(raw)], check=False, cwd=PROTOS, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"buf build failed:\n{proc.stdout}{proc.stderr}")
        fds = descriptor_pb2.FileDescriptorSet.FromString(raw.read_bytes())
    for f in fds.file:
        if not f.name.startswith("conveyor/"):
            f.ClearField("source_code_info")
    path.write_bytes(fds.SerializeToString(deterministic=True))


def generate(out: Path, langs: list[str]) -> list[Path]:
    """Run buf.gen.yaml into a temporary directory and copy each language's files to
    `out` (replacing what was there). Returns the files written."""
    if "ts" in langs and not PROTOC_GEN_ES.exists():
        raise SystemExit(f"{PROTOC_GEN_ES} is missing: run `npm ci` in clients/ts (or pass --lang python)")
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([buf_binary(), "generate", "--template", template(langs), "-o", tmp],
                              check=False, cwd=PROTOS, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"buf generate failed:\n{proc.stdout}{proc.stderr}")
        for lang in langs:
            base, dest = LANGS[lang]
            source = Path(tmp) / base / (PY_DIR if lang == "python" else "")
            target = out / dest
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
            if lang == "python":
                (target / "__init__.py").write_text(PY_INIT)
                (target / "py.typed").write_text("")  # PEP 561: applications' mypy reads the .pyi stubs
                descriptor_set(out / DESCRIPTOR_SET)
            written += sorted(p for p in target.rglob("*") if p.is_file())
    if "python" in langs:
        written += gen_docs.write(out / DOCS_DIR, out / DESCRIPTOR_SET)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT)
    parser.add_argument("--lang", choices=["all", *LANGS], default=None)
    ns = parser.parse_args()
    if ns.lang is None and not PROTOC_GEN_ES.exists():
        print(f"generate.py: {PROTOC_GEN_ES} is missing (`npm ci` in clients/ts): the TypeScript is NOT "
              "regenerated", file=sys.stderr)
        ns.lang = "python"
    langs = list(LANGS) if ns.lang in (None, "all") else [ns.lang]
    for path in generate(ns.out, langs):
        print(path.relative_to(ns.out))


if __name__ == "__main__":
    main()
