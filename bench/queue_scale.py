"""Queue size does not slow the answers: GetQueue and a waiting job's position on an
empty queue and on one of 1,000,000 waiting jobs, through a real gateway. Then how
jobs are best submitted: SubmitJobs batches against SubmitJob one by one against
plain Dramatiq `actor.send` in a loop, on the same Redis.

    .venv/bin/python -m bench.queue_scale [--waiting 1000000] [--calls 500]

Loopback only; bounded; stops by itself. Filling a million jobs takes a minute or two
and about 2 GB of Redis memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import redis

from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.store.records import NewJob, Priority
from conveyor.transport import store_policy
from conveyor.v1 import job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.processes import Stack, stack_env, start_redis

SPEC = job_service_pb2.SubmitJobRequest(queue="big", noop=task_pb2.NoopTask()).SerializeToString()


async def fill(url: str, prefix: str, queue: str, count: int) -> float:
    """`count` waiting jobs in `queue`, written with the store's own submit script."""
    client = connect(url, max_connections=8)
    store = JobStore(client, prefix, store_policy(Settings(key_prefix=prefix)))
    start = time.perf_counter()
    batch = 2000

    async def writer(offset: int) -> None:
        for i in range(offset, count, batch * 4):
            n = min(batch, count - i)
            await store.submit_many([
                NewJob(id=uuid.uuid4().hex, queue=queue, owner="default", priority=Priority((j % 5) + 1),
                       max_attempts=3, timeout_ms=60_000, run_at_ms=0, spec=SPEC, kind="noop")
                for j in range(n)
            ])

    await asyncio.gather(*(writer(k * batch) for k in range(4)))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return elapsed


async def timed(calls: int, fn: object) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        await fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return out


async def answers(target: str, queue: str, job_id: str, calls: int) -> tuple[list[float], list[float], int]:
    async with grpc.aio.insecure_channel(target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        pos = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=job_id))).job.position
        q = await timed(calls, lambda: queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=queue)))
        j = await timed(calls, lambda: jobs.GetJob(job_service_pb2.GetJobRequest(id=job_id)))
        return q, j, pos


async def submit_shapes(target: str, n: int) -> tuple[float, float]:
    req = job_service_pb2.SubmitJobRequest(queue="shapes", noop=task_pb2.NoopTask())
    req.delay.FromSeconds(3600)  # parked: nothing runs them
    async with grpc.aio.insecure_channel(target) as ch:
        jobs = JobServiceStub(ch)
        t = time.perf_counter()
        for i in range(0, n, 1000):
            await jobs.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(1000, n - i)))
        batch = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            await jobs.SubmitJob(req)
        single = n / (time.perf_counter() - t)
    return batch, single


def plain_sends(url: str, n: int) -> float:
    os.environ.update({"BENCH_REDIS_URL": url, "BENCH_NAMESPACE": "bench-plain"})
    from bench import plain_actor

    t = time.perf_counter()
    for _ in range(n):
        plain_actor.noop.send()
    rate = n / (time.perf_counter() - t)
    redis.Redis.from_url(url).delete("bench-plain:bench-plain")  # nothing consumes them
    return rate


def fmt(ms: list[float]) -> str:
    ordered = sorted(ms)
    return f"p50 {statistics.median(ordered):5.2f} ms  p99 {ordered[int(0.99 * (len(ordered) - 1))]:5.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--submits", type=int, default=5000)
    ns = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    redis_proc, url = start_redis(tmp / "redis")
    stack = Stack(url, stack_env(url, tmp / "data", CONVEYOR_LOG_LEVEL="WARNING"), tmp / "logs")
    try:
        stack.start_gateway()  # no executor: every job stays waiting
        asyncio.run(fill(url, stack.prefix, "small", 1))
        print(f"filling a queue with {ns.waiting:,} waiting jobs ...", flush=True)
        took = asyncio.run(fill(url, stack.prefix, "big", ns.waiting))
        print(f"  filled in {took:.1f}s ({ns.waiting / took:,.0f} jobs/s through the submit script)")
        r = redis.Redis.from_url(url, decode_responses=True)
        middle = str(r.zrange(f"{stack.prefix}:q:big:waiting", ns.waiting // 2, ns.waiting // 2)[0])
        only = str(r.zrange(f"{stack.prefix}:q:small:waiting", 0, 0)[0])
        mem = r.info("memory")["used_memory_human"]
        q_small, j_small, _ = asyncio.run(answers(stack.grpc_target, "small", only, ns.calls))
        q_big, j_big, pos = asyncio.run(answers(stack.grpc_target, "big", middle, ns.calls))
        batch, single = asyncio.run(submit_shapes(stack.grpc_target, ns.submits))
        plain = plain_sends(url, ns.submits)
    finally:
        stack.stop()
        redis_proc.stop()
    print(f"redis memory with {ns.waiting:,} waiting jobs: {mem}")
    print(f"GetQueue, queue of 1 job          : {fmt(q_small)}")
    print(f"GetQueue, queue of {ns.waiting:,} jobs : {fmt(q_big)}   ratio p50 "
          f"{statistics.median(q_big) / statistics.median(q_small):.2f}x")
    print(f"GetJob position, queue of 1       : {fmt(j_small)}")
    print(f"GetJob position {pos:,} of {ns.waiting:,} : {fmt(j_big)}   ratio p50 "
          f"{statistics.median(j_big) / statistics.median(j_small):.2f}x")
    print(f"SubmitJobs (1000 per call)        : {batch:8,.0f} jobs/s")
    print(f"SubmitJob one by one              : {single:8,.0f} jobs/s")
    print(f"plain dramatiq actor.send loop    : {plain:8,.0f} jobs/s   SubmitJobs/send {batch / plain:.2f}x")


if __name__ == "__main__":
    main()
