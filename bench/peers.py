"""Conveyor against its peers, side by side in one run on one redis-server: plain
Dramatiq (Python) and BullMQ (Node; installed from the npm registry into
bench/bullmq/node_modules by the first run, `npm ci`, from the committed lock file).
No-op jobs, `--slots` per worker process.

    .venv/bin/python -m bench.peers [--jobs 20000] [--slots 8] [--latency-jobs 300]

Per system, through its own API (Conveyor through the gateway over gRPC, with its
default settings: full job state, events and retention kept):
- enqueue one by one (each call awaited): Conveyor SubmitJob, Dramatiq actor.send,
  BullMQ queue.add;
- enqueue in bulk: Conveyor SubmitJobs of 500, BullMQ addBulk of 500 (Dramatiq has none);
- process with 1 and with 2 worker processes: the jobs are enqueued first (Conveyor:
  into a paused queue, resumed at the start; BullMQ: workers started after; Dramatiq,
  which cannot hold a queue back, sends while its warm workers drain, and sending is
  faster than its processing), then timed until the last one is done (Conveyor: seen
  by a WatchQueue stream taking events in batches);
- submit -> completion seen by the client, one job at a time with idle workers:
  Conveyor SubmitJob + WaitJob, BullMQ add + waitUntilFinished (p50, p99).
Then the ratios Conveyor / BullMQ. Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis

from clients.sdk import queue_events
from clients.sdk._common import duration
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.processes import Stack, spawn, stack_env, start_redis, wait_for

BULLMQ_DIR = Path(__file__).with_name("bullmq")
BATCH = 500


# --- BullMQ --------------------------------------------------------------------------------
def bullmq(redis_url: str, *args: object, timeout: float = 900) -> dict[str, float]:
    """One measurement of bench/bullmq/peer.mjs (its JSON line)."""
    done = subprocess.run(["node", str(BULLMQ_DIR / "peer.mjs"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "BENCH_REDIS_URL": redis_url}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bullmq {args}: exit {done.returncode}\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- plain Dramatiq ------------------------------------------------------------------------
def dramatiq_enqueue(redis_url: str, jobs: int) -> float:
    os.environ.update({"BENCH_REDIS_URL": redis_url, "BENCH_NAMESPACE": "bench-peers"})
    from bench import plain_actor

    start = time.perf_counter()
    for _ in range(jobs):
        plain_actor.noop.send()
    rate = jobs / (time.perf_counter() - start)
    redis.Redis.from_url(redis_url).delete("bench-peers:bench-plain", "bench-peers:bench-plain.msgs")
    return rate


def dramatiq_process(redis_url: str, jobs: int, processes: int, threads: int, log_dir: Path) -> float:
    os.environ.update({"BENCH_REDIS_URL": redis_url, "BENCH_NAMESPACE": "bench-peers"})
    from bench import plain_actor

    r = redis.Redis.from_url(redis_url)
    r.delete(plain_actor.COUNTER_KEY)
    worker = spawn("dramatiq", [sys.executable, "-m", "dramatiq", "bench.plain_actor", "--processes", str(processes),
                                "--threads", str(threads)], dict(os.environ), log_dir)
    try:
        for _ in range(processes * 4):
            plain_actor.noop.send()
        wait_for(lambda: int(r.get(plain_actor.COUNTER_KEY) or 0) >= processes * 4, 60, "dramatiq workers warm")
        r.delete(plain_actor.COUNTER_KEY)
        start = time.perf_counter()
        for _ in range(jobs):
            plain_actor.noop.send()
        wait_for(lambda: int(r.get(plain_actor.COUNTER_KEY) or 0) >= jobs, 600, "dramatiq to drain", 0.005)
        return jobs / (time.perf_counter() - start)
    finally:
        worker.stop()
        r.close()


# --- Conveyor ------------------------------------------------------------------------------
NOOP = job_service_pb2.SubmitJobRequest(noop=task_pb2.NoopTask())


def conveyor_stack(redis_url: str, tmp: Path, name: str, processes: int, slots: int) -> Stack:
    return Stack(redis_url, stack_env(
        redis_url, tmp / name, CONVEYOR_EXECUTOR_KINDS="noop", CONVEYOR_EXECUTOR_PROCESSES=str(processes),
        CONVEYOR_EXECUTOR_SLOTS=str(slots), CONVEYOR_LOG_LEVEL="WARNING",
    ), tmp / name / "logs")


def request(queue: str) -> job_service_pb2.SubmitJobRequest:
    req = job_service_pb2.SubmitJobRequest()
    req.CopyFrom(NOOP)
    req.queue = queue
    return req


async def conveyor_enqueue(stack: Stack, jobs: int, bulk: bool) -> float:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        queue = f"peers-enqueue-{'bulk' if bulk else 'one'}"
        await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(queue=queue))  # enqueue only: nothing runs
        req = request(queue)
        start = time.perf_counter()
        if bulk:
            for i in range(0, jobs, BATCH):
                await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(BATCH, jobs - i)))
        else:
            for _ in range(jobs):
                await stub.SubmitJob(req)
        return jobs / (time.perf_counter() - start)


async def conveyor_process(stack: Stack, jobs: int, tag: str) -> float:
    queue = f"peers-process-{tag}"
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(queue=queue))
        req = request(queue)
        for i in range(0, jobs, BATCH):
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(BATCH, jobs - i)))
        after = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=queue))).queue.last_sequence

        async def drained() -> None:
            seen = 0
            watch = queue_service_pb2.WatchQueueRequest(queue=queue, after_sequence=after, max_batch_size=500)
            async for msg in queues.WatchQueue(watch):
                for event in queue_events(msg):
                    if event.state == job_pb2.JOB_STATE_COMPLETED:
                        seen += 1
                        if seen == jobs:
                            return

        watcher = asyncio.create_task(drained())
        start = time.perf_counter()
        await queues.ResumeQueue(queue_service_pb2.ResumeQueueRequest(queue=queue))
        await asyncio.wait_for(watcher, 900)
        return jobs / (time.perf_counter() - start)


async def conveyor_latency(stack: Stack, jobs: int) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        req = request("peers-latency")
        took = []
        for i in range(jobs + 20):
            start = time.perf_counter()
            sub = await stub.SubmitJob(req)
            done = await stub.WaitJob(job_service_pb2.WaitJobRequest(id=sub.id, timeout=duration(30)))
            if done.job.state != job_pb2.JOB_STATE_COMPLETED:
                raise RuntimeError(f"latency job ended {done.job.state}")
            if i >= 20:
                took.append((time.perf_counter() - start) * 1000)
        took.sort()
        return statistics.median(took), took[min(len(took) - 1, round(0.99 * (len(took) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per measurement")
    parser.add_argument("--one-by-one", type=int, default=3_000, help="jobs enqueued one by one")
    parser.add_argument("--slots", type=int, default=8, help="slots (threads, concurrency) per worker process")
    parser.add_argument("--latency-jobs", type=int, default=300, help="jobs one at a time for the latency")
    ns = parser.parse_args()
    if shutil.which("node") is None:
        sys.exit("BullMQ runs on Node.js: install node and npm first")
    if not (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
        print("installing BullMQ from the npm registry: npm ci --prefix bench/bullmq", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(BULLMQ_DIR)], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-peers-"))
    redis_proc, url = start_redis(tmp / "redis")
    rows: dict[str, dict[str, str]] = {"Dramatiq": {}, "BullMQ (Node)": {}, "Conveyor": {}}
    figures: dict[str, dict[str, float]] = {name: {} for name in rows}

    def note(system: str, column: str, value: float, text: str | None = None) -> None:
        figures[system][column] = value
        rows[system][column] = text or f"{value:,.0f}"
        print(f"  {system:<14} {column:<22} {rows[system][column]}", flush=True)

    print(f"no-op jobs: {ns.jobs:,} per run ({ns.one_by_one:,} one by one), {ns.slots} slots per process, "
          f"one redis-server, {os.cpu_count()} cores", flush=True)
    try:
        note("BullMQ (Node)", "enqueue 1-by-1 /s", bullmq(url, "enqueue", "peers-one", ns.one_by_one)["rate"])
        note("BullMQ (Node)", "enqueue bulk /s", bullmq(url, "bulk", "peers-bulk", ns.jobs)["rate"])
        note("Dramatiq", "enqueue 1-by-1 /s", dramatiq_enqueue(url, ns.one_by_one))
        for procs in (1, 2):
            column = f"process, {procs} proc /s"
            drained = bullmq(url, "drain", f"peers-drain-{procs}", ns.jobs, procs, ns.slots)
            note("BullMQ (Node)", column, drained["rate"])
            note("Dramatiq", column, dramatiq_process(url, ns.jobs, procs, ns.slots, tmp / "dramatiq"))
            stack = conveyor_stack(url, tmp, f"conveyor-{procs}", procs, ns.slots)
            try:
                stack.start_gateway()
                stack.start_executor()
                if procs == 1:
                    note("Conveyor", "enqueue 1-by-1 /s", asyncio.run(conveyor_enqueue(stack, ns.one_by_one, False)))
                    note("Conveyor", "enqueue bulk /s", asyncio.run(conveyor_enqueue(stack, ns.jobs, True)))
                    p50, p99 = asyncio.run(conveyor_latency(stack, ns.latency_jobs))
                    note("Conveyor", "submit->done p50 ms", p50, f"{p50:.1f} (p99 {p99:.1f})")
                note("Conveyor", column, asyncio.run(conveyor_process(stack, ns.jobs, str(procs))))
            finally:
                stack.stop()
        lat = bullmq(url, "latency", "peers-latency", ns.latency_jobs, ns.slots)
        note("BullMQ (Node)", "submit->done p50 ms", lat["p50"], f"{lat['p50']:.1f} (p99 {lat['p99']:.1f})")
    finally:
        redis_proc.stop()
    columns = ["enqueue 1-by-1 /s", "enqueue bulk /s", "process, 1 proc /s", "process, 2 proc /s",
               "submit->done p50 ms"]
    print("\n| | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for system, row in rows.items():
        print(f"| {system} | " + " | ".join(row.get(c, "—") for c in columns) + " |")
    ours, theirs = figures["Conveyor"], figures["BullMQ (Node)"]
    ratios = []
    for c in columns:
        if c in ours and c in theirs and theirs[c]:
            better = theirs[c] / ours[c] if c.endswith("ms") else ours[c] / theirs[c]
            ratios.append(f"{c}: {better:.2f}x")
    print("Conveyor / BullMQ (above 1: Conveyor better): " + ", ".join(ratios))


if __name__ == "__main__":
    main()
