"""A gateway of several serving processes on one port (CONVEYOR_GATEWAY_PROCESSES):
both processes take streams, watchers on either get their job's events, each process
keeps a bounded set of Redis connections however many watch, a process that dies is
started again, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bench.watchers import established_per_pid, gateway_pids, redis_connections_per_process
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from gateway.server import REDIS_POOL_CONNECTIONS
from tests.support.grpc_helpers import submit_request
from tests.support.processes import Stack, spawn, stack_env, start_redis, wait_for

#: Client connections (a channel each); with the kernel spreading them over two
#: processes, all 16 on one has a chance of 2 in 65,536.
CONNECTIONS = 16
#: The gateway's connections named as its pool's: the pool's bound and the one
#: connection the store's scripts share (conveyor/redis_multiplex.py, made with the
#: pool's settings, its name included). Its event reader and readiness ping are
#: counted apart.
POOL_BOUND = REDIS_POOL_CONNECTIONS + 1
LISTEN = "0A"


@pytest.fixture(scope="module")
def own_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own: its CLIENT LIST holds only these tests' gateways."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.stop()


@pytest.fixture
def two_process_stack(own_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(own_redis_url, stack_env(own_redis_url, tmp_path / "data", CONVEYOR_GATEWAY_PROCESSES="2"),
              tmp_path / "logs")
    yield s
    s.stop()
    s.print_problems()


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def channels(target: str, n: int = CONNECTIONS) -> list[grpc.aio.Channel]:
    # A subchannel pool per channel: a TCP connection each, as separate clients would have.
    return [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)]


def start_two(s: Stack) -> tuple[int, list[int]]:
    """A 2-process gateway, SERVING; its supervisor's pid and its serving processes' pids,
    once both have their Redis connections."""
    gw = s.start_gateway()

    def both() -> bool:
        conns = redis_connections_per_process(s.redis_url)
        return len(gateway_pids(gw.pid)) == 2 and all(conns.get(i, {}).get("health") for i in ("0", "1"))

    wait_for(both, 60, "both gateway processes and their Redis connections")
    return gw.pid, gateway_pids(gw.pid)


class Watchers:
    """WatchJob streams over several connections; counts what they saw."""

    def __init__(self, stubs: list[JobServiceStub]) -> None:
        self.stubs = stubs
        self.opened = 0
        self.cancelled = 0
        self.failed: list[grpc.StatusCode] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    def start(self, job_ids: list[str], n: int) -> None:
        first = len(self.tasks)
        self.tasks += [asyncio.create_task(self._watch(self.stubs[i % len(self.stubs)], job_ids[i % len(job_ids)]))
                       for i in range(first, first + n)]

    async def _watch(self, stub: JobServiceStub, job_id: str) -> None:
        try:
            async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
                if msg.WhichOneof("kind") == "job":
                    self.opened += 1
                elif msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_CANCELLED:
                    self.cancelled += 1
                self._changed.set()
        except grpc.aio.AioRpcError as err:
            self.failed.append(err.code())
            self._changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {self.opened} opened, {self.cancelled} "
                                 f"cancelled, failed {self.failed}") from None


async def test_two_processes_serve_one_port_with_bounded_redis_connections(two_process_stack: Stack) -> None:
    s = two_process_stack
    _supervisor, pids = start_two(s)
    port = int(s.grpc_target.rsplit(":", 1)[1])
    chans = channels(s.grpc_target)
    try:
        stubs = [JobServiceStub(ch) for ch in chans]
        # Jobs wait (no executor): cancelling them makes the events the watchers wait for.
        ids = [r.id for r in (await stubs[0].SubmitJobs(job_service_pb2.SubmitJobsRequest(
            requests=[submit_request({"queue": "watched", "noop": {}}) for _ in range(50)]))).results]
        w = Watchers(stubs)
        w.start(ids, 50)
        await w.until(lambda: w.opened == 50, "50 streams open")
        few = redis_connections_per_process(s.redis_url)
        w.start(ids, 450)
        await w.until(lambda: w.opened == 500, "500 streams open")
        many = redis_connections_per_process(s.redis_url)

        # Every connection is held by one of the two serving processes, and both hold some.
        held = established_per_pid(pids, port)
        assert sum(held.values()) == CONNECTIONS and all(held.values()), held
        # Per process: one event reader and one readiness connection whatever the watchers,
        # and a pool within its bound (~250 watchers each, far more than connections).
        for index in ("0", "1"):
            assert few[index]["events"] == many[index]["events"] == 1, (few, many)
            assert few[index]["health"] == many[index]["health"] == 1, (few, many)
            assert many[index]["pool"] <= POOL_BOUND, many

        for job_id in ids:
            await stubs[0].CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
        # Every watcher, on whichever process its connection landed, sees its job's event.
        await w.until(lambda: w.cancelled == 500, "every watcher's CANCELLED event")
        await asyncio.gather(*w.tasks)
        assert w.failed == []
    finally:
        for ch in chans:
            await ch.close()


async def test_a_killed_process_is_started_again_and_sigterm_stops_them_all(two_process_stack: Stack) -> None:
    s = two_process_stack
    supervisor, pids = start_two(s)
    port = int(s.grpc_target.rsplit(":", 1)[1])
    chans = channels(s.grpc_target)
    later: list[grpc.aio.Channel] = []
    try:
        stubs = [JobServiceStub(ch) for ch in chans]
        job_id = (await stubs[0].SubmitJob(submit_request({"queue": "watched", "noop": {}}))).id
        w = Watchers(stubs)
        w.start([job_id], CONNECTIONS)  # one stream per connection
        await w.until(lambda: w.opened == CONNECTIONS, "a stream on every connection")
        held = established_per_pid(pids, port)
        assert sum(held.values()) == CONNECTIONS and all(held.values()), held
        victim, survivor = pids

        os.kill(victim, signal.SIGKILL)
        # The streams on the killed process end (their connection is gone); the others stay open.
        await w.until(lambda: len(w.failed) == held[victim], "the killed process's streams to end")
        assert set(w.failed) == {grpc.StatusCode.UNAVAILABLE}, w.failed
        # The supervisor starts a process in its place, on the same port.
        wait_for(lambda: len(now := gateway_pids(supervisor)) == 2 and victim not in now, 60,
                 "a new gateway process")
        replacement = next(p for p in gateway_pids(supervisor) if p != survivor)
        wait_for(lambda: established_per_pid([replacement], port, state=LISTEN)[replacement] > 0, 60,
                 "the new process to listen on the gateway's port")
        # New clients land on both processes again, the new one included.
        later = channels(s.grpc_target)
        w2 = Watchers([JobServiceStub(ch) for ch in later])
        w2.start([job_id], CONNECTIONS)
        await w2.until(lambda: w2.opened == CONNECTIONS, "streams on the new connections")
        again = established_per_pid([survivor, replacement], port)
        assert again[replacement] > 0, again

        await JobServiceStub(later[0]).CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
        # The survivor's streams and the new ones all see the event.
        await w.until(lambda: w.cancelled == held[survivor], "the surviving streams' events")
        await w2.until(lambda: w2.cancelled == CONNECTIONS, "the new streams' events")
    finally:
        for ch in [*chans, *later]:
            await ch.close()
    gateway = s.gateway
    assert gateway is not None
    assert "gateway process died; starting it again" in gateway.log()
    # SIGTERM to the supervisor drains and stops every serving process; it exits 0.
    assert gateway.stop(timeout=60) == 0
    assert not any(running(p) for p in (survivor, replacement))


def test_a_process_that_cannot_start_stops_the_gateway(tmp_path: Path, own_redis_url: str) -> None:
    redis_url = own_redis_url
    # Beyond loopback without auth: each serving process refuses to start (status 1).
    env = stack_env(redis_url, tmp_path / "data", CONVEYOR_GATEWAY_PROCESSES="2",
                    CONVEYOR_GRPC_ADDR="0.0.0.0:" + stack_env(redis_url, tmp_path)["CONVEYOR_GRPC_ADDR"].rsplit(":")[1])
    p = spawn("gateway", [sys.executable, "-m", "gateway.main"], env, tmp_path / "logs")
    try:
        p.proc.wait(60)
    finally:
        p.kill()
    assert p.proc.returncode == 1
    assert "refusing to serve" in p.log() and "could not start; stopping the gateway" in p.log()
