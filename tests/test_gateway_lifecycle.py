"""The gateway under many watchers and at shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis

from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.grpc_helpers import submit_request
from tests.support.processes import Stack, stack_env, start_redis

WATCHERS = 1000


def gateway_connections(s: Stack) -> int:
    with redis.Redis.from_url(s.redis_url) as r:
        return sum(1 for c in r.client_list() if c.get("name", "").startswith("conveyor-gateway"))


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack on a Redis of its own: the session's Redis also holds other tests'
    gateways, whose connections CLIENT LIST would count too."""
    server, url = start_redis(tmp_path / "redis")
    s = Stack(url, stack_env(url, tmp_path / "stack"), tmp_path / "logs")
    try:
        yield s
    finally:
        s.stop()
        s.print_problems()
        server.stop()


async def test_a_thousand_watchers_share_a_constant_number_of_redis_connections(own_stack: Stack) -> None:
    s = own_stack
    s.start_gateway()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        # Jobs wait (no executor yet) while everyone starts watching.
        subs = (await jobs.SubmitJobs(job_service_pb2.SubmitJobsRequest(
            requests=[submit_request({"noop": {}}) for _ in range(50)]))).results
        before = gateway_connections(s)
        seen_terminal = 0
        ready = asyncio.Event()
        started = 0

        async def watch(job_id: str) -> None:
            nonlocal seen_terminal, started
            async for msg in jobs.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
                if msg.WhichOneof("kind") == "job":
                    started += 1
                    if started == WATCHERS:
                        ready.set()
                elif msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                    seen_terminal += 1

        tasks = [asyncio.create_task(watch(subs[i % len(subs)].id)) for i in range(WATCHERS)]
        await asyncio.wait_for(ready.wait(), 60)
        during = gateway_connections(s)
        s.start_executor()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert seen_terminal == WATCHERS
        # The pool grows only to its bound however many streams are open (64, plus the
        # event reader's and the readiness ping's connections).
        assert during <= before + 64 and gateway_connections(s) <= 67


async def test_shutdown_ends_streams_with_unavailable_and_exits_cleanly(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    gw = s.start_gateway()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({"noop": {}}))  # no executor: it waits
        call = jobs.WatchJob(job_service_pb2.WatchJobRequest(id=sub.id))
        first = await call.read()
        assert first.job.id == sub.id
        gw.signal(signal.SIGTERM)
        code = None
        try:
            while True:
                msg = await asyncio.wait_for(call.read(), 10)
                if msg is grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as err:
            code = err.code()
        assert code == grpc.StatusCode.UNAVAILABLE
    assert gw.proc.wait(15) == 0
    assert "gateway stopped" in gw.log()

