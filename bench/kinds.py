"""A user-defined no-op kind's throughput next to the built-in `noop`, in one run.

    .venv/bin/python -m bench.kinds [--jobs 3000] [--processes 2] [--slots 8] [--rounds 2]

One redis-server, one gateway and one executor (loading bench/noop_kind.py through
CONVEYOR_KINDS=bench.noop_kind), all on loopback. Each way N jobs are submitted in
SubmitJobs batches of 500 and their completion observed on a WatchQueue stream (events
in batches), on a queue of their own: the built-in `{"noop": {}}` and the user kind
`{"kind": {"name": "bench-noop", "input": {"n": i}}}` (JSON input through the gateway's
schema validation, the registry, the pydantic model, JSON output). The two alternate
for `--rounds` rounds (this machine's speed drifts), and the ratio is of the means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client import job_output, job_request, queue_events
from conveyor_client._common import duration
from tests.support.processes import Stack, stack_env, start_redis

BATCH = 500
USER_KIND = "bench-noop"


def requests_for(way: str, queue: str, jobs: int) -> list[job_service_pb2.SubmitJobRequest]:
    if way == "noop":
        return [job_request({"noop": {}}, queue=queue)] * jobs
    return [job_request(kind=USER_KIND, input={"n": i}, queue=queue) for i in range(jobs)]


async def watched_rate(stack: Stack, way: str, queue: str, jobs: int) -> float:
    """Jobs per second from the first SubmitJobs until a WatchQueue stream has seen
    every job complete (a job that fails ends the run)."""
    requests = requests_for(way, queue, jobs)
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        # Warm up the queue (and learn where its event log stands).
        warm = await stub.SubmitJob(requests[0])
        after = 0
        async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=warm.id, after_sequence=0)):
            if msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                after = msg.event.queue_sequence
                break
            if msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_FAILED:
                raise RuntimeError(f"{way}: the warm-up job failed: {msg.event.error.message}")

        async def watcher() -> None:
            seen: set[str] = set()
            watch = queue_service_pb2.WatchQueueRequest(queue=queue, after_sequence=after, max_batch_size=100)
            async for msg in queues.WatchQueue(watch):
                for event in queue_events(msg):
                    if event.state == job_pb2.JOB_STATE_FAILED:
                        raise RuntimeError(f"{way}: job {event.job_id} failed: {event.error.message}")
                    if event.state == job_pb2.JOB_STATE_COMPLETED:
                        seen.add(event.job_id)
                        if len(seen) == jobs:
                            return

        start = time.perf_counter()
        observer = asyncio.create_task(watcher())
        for i in range(0, jobs, BATCH):
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=requests[i : i + BATCH]))
        await asyncio.wait_for(observer, 600)
        return jobs / (time.perf_counter() - start)


async def check_output(stack: Stack) -> None:
    """One user-kind job's output, to be sure the bench measures the real path."""
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        sub = await stub.SubmitJob(job_request(kind=USER_KIND, input={"n": 7}, queue="bench-kinds-check"))
        waited = await stub.WaitJob(job_service_pb2.WaitJobRequest(id=sub.id, timeout=duration(30)))
        job = waited.job
        if job.state != job_pb2.JOB_STATE_COMPLETED or job_output(job) != {"n": 7}:
            raise RuntimeError(f"the user kind did not run as expected: {job}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs each way, each round")
    parser.add_argument("--processes", type=int, default=2, help="executor worker processes")
    parser.add_argument("--slots", type=int, default=8, help="slots per process")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (noop, user kind), alternating")
    ns = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-kinds-"))
    redis_proc, url = start_redis(tmp / "redis")
    stack = Stack(
        url,
        stack_env(
            url,
            tmp / "data",
            CONVEYOR_KINDS="bench.noop_kind",
            CONVEYOR_EXECUTOR_KINDS=f"noop,{USER_KIND}",  # no browser: no Chromium
            CONVEYOR_EXECUTOR_PROCESSES=str(ns.processes),
            CONVEYOR_EXECUTOR_SLOTS=str(ns.slots),
            CONVEYOR_QUEUE_CONCURRENCY="1000",
            CONVEYOR_KEEP_COMPLETED="1000000",
            CONVEYOR_LOG_LEVEL="WARNING",
        ),
        tmp / "logs",
    )
    rates: dict[str, list[float]] = {"noop": [], USER_KIND: []}
    try:
        print(
            f"no-op jobs: {ns.jobs} each way x {ns.rounds} round(s), {ns.processes} processes x {ns.slots} slots, "
            f"one redis-server, {os.cpu_count()} cores"
        )
        stack.start_gateway()
        stack.start_executor()
        asyncio.run(check_output(stack))
        for way in ("noop", USER_KIND):  # warm-up, not reported
            asyncio.run(watched_rate(stack, way, f"bench-kinds-warm-{way}", max(100, ns.jobs // 5)))
        for round_ in range(ns.rounds):
            order = ("noop", USER_KIND) if round_ % 2 == 0 else (USER_KIND, "noop")
            for way in order:
                rate = asyncio.run(watched_rate(stack, way, f"bench-kinds-{way}-{round_}", ns.jobs))
                rates[way].append(rate)
                print(f"  round {round_ + 1}: {way:<10} {rate:8,.0f} jobs/s")
    finally:
        stack.stop()
        redis_proc.stop()
    builtin, user = statistics.mean(rates["noop"]), statistics.mean(rates[USER_KIND])
    print(f"  built-in noop          : {builtin:8,.0f} jobs/s end to end (mean of {len(rates['noop'])})")
    print(f"  user kind {USER_KIND!r}: {user:8,.0f} jobs/s end to end (mean of {len(rates[USER_KIND])})")
    print(f"  ratio user/built-in    : {user / builtin:.2f}x")


if __name__ == "__main__":
    main()
