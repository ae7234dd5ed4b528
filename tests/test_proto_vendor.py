"""The contract stands alone: `protos/` is the one include path a client needs (every
import resolves there, or is a well-known google/protobuf type), plain grpc-js +
proto-loader with only `protos/` talks to a real gateway and decodes error details,
and `buf breaking` holds the contract to the committed baseline (and does catch a
breaking change)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.processes import ROOT, Stack

PROTOS = ROOT / "protos"
BUF = ROOT / ".venv" / "bin" / "buf"
BASELINE = PROTOS / "baseline" / "conveyor-v1.binpb"
TS = ROOT / "clients" / "ts"
IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)


def test_every_import_resolves_inside_protos_or_is_well_known() -> None:
    protos = sorted(PROTOS.rglob("*.proto"))
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto",
            "google/api/field_behavior.proto"} <= {str(p.relative_to(PROTOS)) for p in protos}
    missing = []
    for proto in protos:
        for name in IMPORT.findall(proto.read_text()):
            if not name.startswith("google/protobuf/") and not (PROTOS / name).is_file():
                missing.append(f"{proto.relative_to(PROTOS)} imports {name}")
    assert not missing, missing


def test_plain_grpc_js_and_proto_loader_with_only_protos(stack: Stack) -> None:
    proc = subprocess.run(
        [shutil.which("node") or "node", "--test", "--test-reporter=tap", "test/proto-loader.test.mjs"],
        check=False, cwd=TS, capture_output=True, text=True, timeout=100,
        env={**os.environ, "CONVEYOR_TARGET": stack.grpc_target, "CONVEYOR_PROTOS": str(PROTOS)})
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    assert proc.returncode == 0, "node --test failed (output above)"
    assert "# pass 3" in proc.stdout and "# fail 0" in proc.stdout


def test_buf_breaking_passes_against_the_baseline() -> None:
    proc = subprocess.run([str(BUF), "breaking", str(PROTOS), "--against", str(BASELINE)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"breaking change against {BASELINE.name}:\n{proc.stdout}{proc.stderr}"


def test_buf_breaking_catches_a_renamed_field(tmp_path: Path) -> None:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    service = copy / "conveyor" / "v1" / "job_service.proto"
    text = service.read_text()
    assert "string queue = 1;" in text
    service.write_text(text.replace("string queue = 1;", "string queue_name = 1;", 1))
    proc = subprocess.run([str(BUF), "breaking", str(copy), "--against", str(BASELINE)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert 'changed name from "queue" to "queue_name"' in proc.stdout
