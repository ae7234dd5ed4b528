"""Nothing is lost when an executor dies: a SIGKILLed executor's job runs again on
the next executor; a dead worker process is restarted by its supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from dramatiq.message import Message

from conveyor.processes import pid_alive
from conveyor.transport import RUN_JOB_ACTOR, TRANSPORT_QUEUE, make_broker, transport_namespace
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.grpc_helpers import submit_request, wait_state
from tests.support.processes import Process, Stack, stack_env, start_redis, wait_for


def log_lines(process: Process) -> list[dict[str, object]]:
    lines = []
    for line in process.log().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def worker_pids(executor: Process) -> list[int]:
    return [int(p) for p in re.findall(r'"pid": (\d+), "event": "worker started"', executor.log())]


async def test_sigkilled_executor_loses_no_job(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(CONVEYOR_STALL_TIMEOUT_SECONDS="3")
    s.start_gateway()
    first = s.start_executor()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({"noop": {"sleep": "3s"}}))
        await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_ACTIVE})
        workers = worker_pids(first)
        first.kill()  # SIGKILL the executor mid-job; its workers die with it
        wait_for(lambda: not any(pid_alive(p) for p in workers), 10, "worker processes to die")
        assert (await jobs.GetJob(job_service_pb2.GetJobRequest(id=sub.id))).job.state == job_pb2.JOB_STATE_ACTIVE

        s.start_executor()
        up = time.monotonic()
        job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED}, timeout=30)
        assert time.monotonic() - up < 30
        assert job.attempt == 2  # the killed attempt counted; the second one ran


async def test_supervisor_restarts_a_dead_worker_and_its_job_recovers(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(CONVEYOR_STALL_TIMEOUT_SECONDS="3")
    s.start_gateway()
    executor = s.start_executor()
    (worker,) = worker_pids(executor)
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({"noop": {"sleep": "2s"}}))
        await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_ACTIVE})
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(executor)) == 2, 15, "the supervisor to restart the worker")
        assert executor.alive()
        job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED}, timeout=30)
        assert job.attempt == 2
        await asyncio.sleep(0)  # the restarted worker keeps serving
        again = await jobs.SubmitJob(submit_request({"noop": {}}))
        await wait_state(jobs, again.id, {job_pb2.JOB_STATE_COMPLETED}, timeout=15)


async def test_an_executor_keeps_its_dramatiq_heartbeat_fresh_busy_or_idle(make_stack: Callable[..., Stack]) -> None:
    """The executor's consumer takes messages with Conveyor's own script, which beats
    the worker's Dramatiq heartbeat, at least once a second while idle (it blocks on
    the wake list for a second at most); a busy worker takes nothing, and its store
    heartbeat beats it instead. A stale heartbeat would let the store's reap (or
    Dramatiq's own maintenance) hand this worker's outstanding deliveries to others."""
    s = make_stack(CONVEYOR_EXECUTOR_SLOTS="1")
    s.start_gateway()
    s.start_executor()
    key = f"{transport_namespace(s.prefix)}:__heartbeats__"
    r = s.redis()

    def beat() -> float:
        beats: list[tuple[bytes, float]] = r.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        assert len(beats) == 1  # the one worker process
        return beats[0][1]

    def beats_on() -> None:
        since = beat()
        wait_for(lambda: beat() >= since + 1500, 4, "the worker's heartbeat to be refreshed")

    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({"noop": {"sleep": "5s"}}))
        await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_ACTIVE})
        beats_on()  # its one slot busy
        await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED})
        beats_on()  # idle


async def test_a_duplicate_delivery_sent_with_dramatiqs_own_api_runs_nothing(make_stack: Callable[..., Stack]) -> None:
    """Delivery is at least once. A second delivery of an attempt that already ran
    (sent here with Dramatiq's own API, as any redelivery would come) is taken by the
    executor, its claim refused, and acknowledged: the job is unchanged, and none of
    Dramatiq's bookkeeping is left behind."""
    s = make_stack()
    s.start_gateway()
    executor = s.start_executor()
    ns = transport_namespace(s.prefix)
    r = s.redis()
    broker = make_broker(s.redis_url, s.prefix)
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({"noop": {}}))
        done = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED})
        broker.enqueue(Message(queue_name=TRANSPORT_QUEUE, actor_name=RUN_JOB_ACTOR, args=(sub.id, 1),
                               kwargs={}, options={}))
        skipped = {"event": "delivery skipped", "job_id": sub.id, "attempt": 1, "reason": "state COMPLETED"}
        wait_for(lambda: any(skipped.items() <= line.items() for line in log_lines(executor)),
                 10, "the executor to take the duplicate delivery and skip it")
        wait_for(lambda: r.hlen(f"{ns}:{TRANSPORT_QUEUE}.msgs") == 0, 5, "the duplicate delivery to be acknowledged")
        assert r.llen(f"{ns}:{TRANSPORT_QUEUE}") == 0
        assert all(r.scard(key) == 0 for key in r.scan_iter(f"{ns}:__acks__.*"))
        after = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=sub.id))).job
        assert (after.state, after.attempt, after.end_time) == (done.state, 1, done.end_time)
    broker.close()


async def test_gateway_and_executor_ride_out_a_redis_restart(tmp_path: Path) -> None:
    """Redis goes away and comes back (its AOF keeps the data): the gateway answers
    UNAVAILABLE meanwhile, then serves again, and the executor takes up work again,
    without either being restarted; nothing submitted before is lost."""
    redis_dir = tmp_path / "redis"
    redis_proc, url = start_redis(redis_dir, appendonly=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    s = Stack(url, stack_env(url, tmp_path / "data"), tmp_path / "logs")
    try:
        s.start_gateway()
        executor = s.start_executor()
        async with grpc.aio.insecure_channel(s.grpc_target) as ch:
            jobs = JobServiceStub(ch)
            before = await jobs.SubmitJob(submit_request({"noop": {}}))
            await wait_state(jobs, before.id, {job_pb2.JOB_STATE_COMPLETED})

            redis_proc.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.SubmitJob(submit_request({"noop": {}}))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            redis_proc, _ = start_redis(redis_dir, port=port, appendonly=True)

            async def submit_when_back() -> str:
                while True:
                    try:
                        return str((await jobs.SubmitJob(submit_request({"noop": {}}))).id)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        await asyncio.sleep(0.2)

            after = await asyncio.wait_for(submit_when_back(), 15)
            await wait_state(jobs, after, {job_pb2.JOB_STATE_COMPLETED}, timeout=20)
            kept = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=before.id))).job
            assert kept.state == job_pb2.JOB_STATE_COMPLETED
            assert executor.alive() and s.gateway is not None and s.gateway.alive()
    finally:
        s.stop()
        redis_proc.stop()
