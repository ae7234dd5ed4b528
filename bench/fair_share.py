"""Fair share between tenants: how long tenant B's new job waits while tenant A has a
backlog of 100,000 jobs in the same queue and priority, against the same with A absent.

    .venv/bin/python -m bench.fair_share [--backlog 100000] [--slots 8] [--samples 30] [--run-ms 20]

One redis-server, one gateway (auth on: A and B are two tenants with keys of their own)
and one executor with 8 slots, on loopback. Every job is a no-op that sleeps --run-ms.
First, with A absent, B submits one job at a time to the queue with its slots idle and
busy alike (8 of B's own long jobs keep every slot taken, as A's would), and the wait
(submit until the job starts running, from its record) is taken --samples times. Then A
submits its backlog, and B submits its jobs again, one at a time, each while A's
backlog still fills the line. Printed: B's place in line and wait (p50, p95) both ways,
the ratio, and the wait B's job would have had in a first-in-first-out line behind A's
backlog (its place x the mean run time / the slots).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from conveyor_client import job_request
from conveyor_client._common import duration
from tests.support.processes import Stack, stack_env, start_redis

ADMIN = "cvk_bench_fair-share-admin"
QUEUE = "shared"
BATCH = 1000


def bearer(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {secret}"),)


async def wait_of(stub: JobServiceStub, key: tuple[tuple[str, str]], run_ms: int) -> tuple[int, float]:
    """Submit one job; its place in line at submit and its wait (ms from its creation
    to its start, as the store recorded them)."""
    sub = await stub.SubmitJob(job_request({"noop": {"sleep": f"{run_ms / 1000}s"}}, queue=QUEUE), metadata=key)
    done = await stub.WaitJob(job_service_pb2.WaitJobRequest(id=sub.id, timeout=duration(60)), metadata=key)
    job = done.job
    if job.state != job_pb2.JOB_STATE_COMPLETED:
        raise RuntimeError(f"B's job ended {job_pb2.JobState.Name(job.state)}")
    return sub.position, job.start_time.ToMilliseconds() - job.create_time.ToMilliseconds()


async def run(stack: Stack, ns: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, keys = JobServiceStub(ch), KeyServiceStub(ch)
        admin = bearer(ADMIN)
        secrets = {}
        for tenant in ("tenant-a", "tenant-b"):
            made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(
                tenant=tenant, role=key_service_pb2.ROLE_SUBMITTER, name="bench"), metadata=admin)
            secrets[tenant] = bearer(made.secret)
        a, b = secrets["tenant-a"], secrets["tenant-b"]
        long_job = job_request({"noop": {"sleep": f"{ns.run_ms / 1000}s"}}, queue=QUEUE)

        async def sample(label: str, busy_with: tuple[tuple[str, str]]) -> tuple[list[int], list[float]]:
            places, waits = [], []
            for _ in range(ns.samples):
                if busy_with is b:
                    # A absent: B's own jobs keep the slots as busy as A's would.
                    await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[long_job] * ns.slots),
                                          metadata=b)
                place, wait = await wait_of(stub, b, ns.run_ms)
                places.append(place)
                waits.append(wait)
            print(f"  {label:<34} B's place p50 {statistics.median(places):>7,.0f}   "
                  f"wait p50 {statistics.median(waits):7.1f} ms   p95 {percentile(waits, 95):7.1f} ms")
            return places, waits

        print(f"queue {QUEUE!r}: {ns.slots} slots, no-op jobs of {ns.run_ms} ms")
        _, alone = await sample("A absent (slots busy with B's own)", b)
        started = time.perf_counter()
        for i in range(0, ns.backlog, BATCH):
            n = min(BATCH, ns.backlog - i)
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[long_job] * n), metadata=a)
        print(f"  A's backlog of {ns.backlog:,} submitted in {time.perf_counter() - started:.1f} s")
        _, shared = await sample(f"A with {ns.backlog:,} waiting", a)
        left = await stub.ListJobs(job_service_pb2.ListJobsRequest(
            queue=QUEUE, state=job_pb2.JOB_STATE_WAITING, page_size=1), metadata=a)
        if not left.jobs:
            raise RuntimeError("A's backlog drained before the samples were taken: raise --backlog")
        ratio = statistics.median(shared) / statistics.median(alone)
        fifo_ms = ns.backlog * ns.run_ms / ns.slots
        print(f"  ratio of B's p50 waits, A present / A absent: {ratio:.2f}x")
        print(f"  in a FIFO line B's job would be at place ~{ns.backlog:,} and wait ~{fifo_ms / 1000:,.0f} s")


def percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=100_000, help="tenant A's waiting jobs")
    parser.add_argument("--slots", type=int, default=8, help="executor slots (and the queue's concurrency)")
    parser.add_argument("--samples", type=int, default=30, help="B's jobs each way")
    parser.add_argument("--run-ms", type=int, default=20, help="each job's run time")
    ns = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-fair-"))
    redis_proc, url = start_redis(tmp / "redis")
    stack = Stack(url, stack_env(
        url, tmp / "data",
        CONVEYOR_AUTH="on", CONVEYOR_ADMIN_KEY=ADMIN,
        CONVEYOR_EXECUTOR_KINDS="noop", CONVEYOR_EXECUTOR_PROCESSES="1",
        CONVEYOR_EXECUTOR_SLOTS=str(ns.slots), CONVEYOR_QUEUE_CONCURRENCY=str(ns.slots),
        CONVEYOR_LOG_LEVEL="WARNING",
    ), tmp / "logs")
    try:
        stack.start_gateway()
        stack.start_executor()
        asyncio.run(run(stack, ns))
    finally:
        stack.stop()
        redis_proc.stop()


if __name__ == "__main__":
    main()
