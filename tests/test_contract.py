"""The committed generated code matches the protos, and the server speaks the
contract: health and reflection are on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.processes import ROOT, Stack


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "conveyor" / "v1").iterdir() if p.is_file()}
    committed = {p.name: p.read_bytes() for p in (ROOT / "conveyor" / "v1").iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "files differ: run `python protos/generate.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated code drifted from the protos: {stale}; run `python protos/generate.py`"


async def test_health_and_reflection_are_on(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="conveyor.v1.JobService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reqs = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        names: list[str] = []
        async for resp in stub.ServerReflectionInfo(reqs):
            names += [s.name for s in resp.list_services_response.service]
        assert {
            "conveyor.v1.JobService", "conveyor.v1.QueueService", "conveyor.v1.ScheduleService",
            "grpc.health.v1.Health",
        } <= set(names)
