"""The TypeScript SDK (clients/ts), as a Node user gets it: `npm pack`ed, installed
from the tarball into a fresh consumer directory (offline, from the npm cache that
`npm ci` filled), and run by Node against a real gateway and executor — node's own
test runner for the API (submit, watch through a forced reconnect and through a path
gone silent that keepalive finds out, wait, cancel, retry, paging, queues, typed error
details), an ESM and a CommonJS consumer, and a
TypeScript consumer type-checked against the packed .d.ts. The committed generated
TypeScript must match the protos."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.processes import ROOT, Stack, free_port, stack_env
from tests.test_tls import _make_ca, _make_leaf, start_tls_gateway

TS = ROOT / "clients" / "ts"
NODE = shutil.which("node") or "node"
NPM = shutil.which("npm") or "npm"
ADMIN = f"cvk_admin_ts-{uuid.uuid4().hex[:8]}"


def run(argv: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@dataclass
class Consumer:
    """A directory where the packed SDK is installed, as an application installs it."""

    path: Path
    tarball: Path


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Consumer:
    packed = tmp_path_factory.mktemp("ts-pack")
    # `npm pack` runs the prepack script: the dual tsc build (dist/esm, dist/cjs).
    out = run([NPM, "pack", "--json", "--pack-destination", str(packed)], cwd=TS)
    tarball = packed / json.loads(out[out.index("["):])[0]["filename"]
    app = tmp_path_factory.mktemp("ts-consumer")
    (app / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "version": "0.0.0"}))
    # Offline: the SDK's dependencies come from the npm cache `npm ci` filled.
    run([NPM, "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", str(tarball)], cwd=app)
    for name in ("sdk.test.mjs", "consumer.mjs", "consumer.cjs", "consumer.ts"):
        shutil.copy(TS / "test" / name, app / name)
    return Consumer(app, tarball)


@dataclass
class Gateways:
    stack: Stack
    quota_target: str
    mtls_target: str
    certs: Path

    def env(self) -> dict[str, str]:
        """What test/sdk.test.mjs reads."""
        return {"CONVEYOR_TARGET": self.stack.grpc_target, "CONVEYOR_API_KEY": ADMIN,
                "CONVEYOR_QUOTA_TARGET": self.quota_target, "CONVEYOR_MTLS_TARGET": self.mtls_target,
                "CONVEYOR_CA_CERT": str(self.certs / "ca.pem"), "CONVEYOR_CLIENT_CERT": str(self.certs / "client.pem"),
                "CONVEYOR_CLIENT_KEY": str(self.certs / "client.key")}


@pytest.fixture(scope="module")
def gateways(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """A gateway with API keys on and an executor; on the same store, a gateway whose
    tenants may have one open job (RESOURCE_EXHAUSTED with RetryInfo) and one serving
    TLS that requires client certificates (mTLS)."""
    certs = tmp_path_factory.mktemp("ts-pki")
    _make_ca(certs, "ca")
    _make_leaf(certs, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
               "basicConstraints=CA:FALSE\n")
    _make_leaf(certs, "client", "ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    data = tmp_path_factory.mktemp("ts-stack")
    stack = Stack(redis_url, stack_env(redis_url, data, CONVEYOR_AUTH="on", CONVEYOR_ADMIN_KEY=ADMIN), data / "logs")
    try:
        stack.start_gateway()
        stack.start_executor()
        quota_target = f"127.0.0.1:{free_port()}"
        stack.start_gateway(CONVEYOR_GRPC_ADDR=quota_target, CONVEYOR_TENANT_MAX_OPEN_JOBS="1")
        client_creds = grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca.pem").read_bytes(), private_key=(certs / "client.key").read_bytes(),
            certificate_chain=(certs / "client.pem").read_bytes())
        mtls_target = start_tls_gateway(
            stack, client_creds, CONVEYOR_GRPC_ADDR=f"127.0.0.1:{free_port()}",
            CONVEYOR_TLS_CERT_FILE=str(certs / "server.pem"), CONVEYOR_TLS_KEY_FILE=str(certs / "server.key"),
            CONVEYOR_TLS_CLIENT_CA_FILE=str(certs / "ca.pem"))
        yield Gateways(stack, quota_target, mtls_target, certs)
    finally:
        stack.stop()
        stack.print_problems()


@pytest.mark.timeout(300)  # includes the fixtures: the dual tsc build, the install, the stack
def test_the_sdk_works_against_a_real_gateway(consumer: Consumer, gateways: Gateways) -> None:
    proc = subprocess.run([NODE, "--test", "--test-reporter=tap", "sdk.test.mjs"], cwd=consumer.path,
                          check=False, capture_output=True, text=True, timeout=200,
                          env={**os.environ, **gateways.env()})
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    if proc.returncode != 0:
        # What the services logged about the jobs the reconnect tests traced.
        for job_id in re.findall(r"submitted job (\S+)", proc.stderr):
            for p in [*gateways.stack.gateways, *gateways.stack.executors]:
                for line in p.log().splitlines():
                    if job_id in line:
                        print(f"[{p.name} {p.pid}] {line[:1500]}")
    assert proc.returncode == 0, "node --test failed (output above)"
    assert "# fail 0" in proc.stdout and "# skipped 0" in proc.stdout
    passed = int(proc.stdout.split("# pass ")[1].split()[0])
    assert passed >= 12, f"only {passed} Node tests passed"


@pytest.mark.timeout(300)
def test_esm_and_commonjs_consumers_of_the_packed_tarball(consumer: Consumer, gateways: Gateways) -> None:
    seen = {}
    for script in ("consumer.mjs", "consumer.cjs"):
        out = json.loads(run([NODE, script], cwd=consumer.path, timeout=60, env=gateways.env()).strip())
        seen[out["format"]] = out
        assert out["state"] == "COMPLETED" and out["sameClass"] is True
        assert out["service"] == "conveyor.v1.JobService"
    assert "/dist/esm/index.js" in seen["esm"]["resolved"]
    assert seen["cjs"]["resolved"].endswith("/dist/cjs/index.js")


@pytest.mark.timeout(300)
def test_a_typescript_consumer_type_checks_against_the_packed_types(consumer: Consumer) -> None:
    tsc = TS / "node_modules" / "typescript" / "bin" / "tsc"
    common = ["--noEmit", "--strict", "--skipLibCheck", "--target", "ES2022", "--types", "node",
              "--typeRoots", str(TS / "node_modules" / "@types")]
    for module, resolution in (("NodeNext", "NodeNext"), ("CommonJS", "Node10")):
        run([NODE, str(tsc), *common, "--module", module, "--moduleResolution", resolution, "consumer.ts"],
            cwd=consumer.path, timeout=120)
    listing = subprocess.run(["tar", "tzf", str(consumer.tarball)], capture_output=True, text=True, check=True).stdout
    for path in ("package/dist/esm/index.d.ts", "package/dist/cjs/index.d.ts", "package/dist/cjs/package.json",
                 "package/dist/esm/gen/conveyor/v1/job_service_pb.js", "package/README.md"):
        assert path in listing.split(), f"{path} is not in the tarball"


def test_generated_typescript_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--lang", "ts", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    gen = Path("clients") / "ts" / "src" / "gen"
    fresh = {p.relative_to(tmp_path / gen): p.read_bytes() for p in (tmp_path / gen).rglob("*") if p.is_file()}
    committed = {p.relative_to(ROOT / gen): p.read_bytes() for p in (ROOT / gen).rglob("*") if p.is_file()}
    assert sorted(fresh) == sorted(committed), "files differ: run `python protos/generate.py`"
    stale = [str(name) for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated TypeScript drifted from the protos: {stale}; run `python protos/generate.py`"
