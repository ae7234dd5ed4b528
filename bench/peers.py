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
  faster than its processing), then timed until the last one is done (Conveyor: the
  queue's completed count, read every 10 ms; BullMQ: its workers' completion counts);
- submit -> completion seen by the client, one job at a time with idle workers:
  Conveyor SubmitJob + WaitJob, BullMQ add + waitUntilFinished (p50, p99); and Conveyor
  SubmitJob with the end seen on one WatchQueue stream opened before (the SDK's
  JobWaiter), which is what waitUntilFinished does with its QueueEvents stream.
Then the ratios Conveyor / BullMQ. Everything runs on loopback and stops by itself.

Beside them:
- the floor of a call through gRPC in Python here: grpc's own health Check against a
  bare grpc.aio server (a process of its own; on asyncio's loop, and on uvloop as the
  gateway runs by default), sequentially from a sync client and from
  50 concurrent async callers, and Conveyor's SubmitJob the same two ways (the ratio is
  issue 16's target 1); and the same bare server on uvloop awaiting one Redis PING per
  call on the shared connection the store's scripts use (conveyor/redis_multiplex.py):
  the floor of any call that must reach Redis before it answers;
- BullMQ draining with 2 processes again, keeping only the newest 100 completed jobs
  (Conveyor's default retention: it deletes a job for each one that completes);
- the cost per job while draining (2 processes): Redis commands (INFO commandstats,
  scripts' own commands counted), Redis CPU, and the workers' CPU (Conveyor: gateway
  and executor process trees, from /proc); and per one-by-one submit: Redis commands,
  Redis CPU and gateway CPU;
- Redis bytes per waiting job and per completed job kept (MEMORY USAGE over the
  system's keys, and INFO used_memory), n jobs each, Conveyor keeping every completed
  job as BullMQ does here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import redis

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client import AsyncConveyorClient
from conveyor_client._common import duration
from conveyor_client.waiter import JobWaiter
from tests.support.processes import Stack, free_port, spawn, stack_env, start_redis, wait_for

BULLMQ_DIR = Path(__file__).with_name("bullmq")
BATCH = 500
CONCURRENT_CALLERS = 50
TICKS = os.sysconf("SC_CLK_TCK")


# --- costs -----------------------------------------------------------------------------------
def parse_info(text: str) -> dict[str, float]:
    """INFO's text as name -> number: commandstats as `cmd:<name>` call counts, the rest
    (used_cpu_sys, used_memory...) as they are."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("cmdstat_"):
            out["cmd:" + name[8:]] = float(value.split(",")[0].split("=")[1])
        elif value:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def redis_info(r: redis.Redis) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in r.info("all").items():
        if name.startswith("cmdstat_"):
            out["cmd:" + name[8:]] = float(value["calls"])
        elif isinstance(value, int | float):
            out[name] = float(value)
    return out


def redis_cost(before: dict[str, float], after: dict[str, float], jobs: int) -> tuple[float, float, str]:
    """Redis commands per job, Redis CPU µs per job, and the top commands per job
    (FCALL/INFO themselves left out of the count: the scripts' commands are counted)."""
    calls = {k[4:]: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("cmd:")}
    calls = {k: v for k, v in calls.items() if v > 0 and k not in ("info", "fcall", "function", "evalsha", "eval")}
    cpu = sum(after[k] - before[k] for k in ("used_cpu_sys", "used_cpu_user"))
    top = ", ".join(f"{k} {v / jobs:.1f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8])
    return sum(calls.values()) / jobs, cpu * 1e6 / jobs, top


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a live process and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        todo.extend(children.get(p, []))
    return total


def stack_cpu(stack: Stack) -> dict[str, float]:
    return {"gateway": sum(tree_cpu_s(p.pid) for p in stack.gateways),
            "executor": sum(tree_cpu_s(p.pid) for p in stack.executors)}


# --- the floor: a bare grpc.aio unary call ------------------------------------------------
def bare_server(port: int, loop: str, redis_url: str = "") -> None:
    """A grpc.aio server with grpc's own health service only (run as its own process),
    on asyncio's loop or on uvloop (the gateway's default, conveyor/event_loop.py);
    with `redis_url`, its Check first awaits one PING on the shared connection of a
    client made as the services make theirs (conveyor.redis_connection.connect)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from conveyor import event_loop
    from conveyor.redis_connection import connect

    class RedisHealth(health.aio.HealthServicer):  # type: ignore[misc]
        def __init__(self, client: Any) -> None:
            super().__init__()
            self.multiplexed = client.multiplexed

        async def Check(self, request: Any, context: Any) -> Any:
            await self.multiplexed.execute("PING")
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def serve() -> None:
        server = grpc.aio.server()
        servicer = RedisHealth(connect(redis_url)) if redis_url else health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    event_loop.run(serve(), "uvloop" if loop == "uvloop" else "asyncio")


def sequential_rate(target: str, call: str, request: object, jobs: int) -> float:
    """Calls/s of one sync client awaiting each call in turn (after a warm-up)."""
    with grpc.insecure_channel(target) as ch:
        method = ch.unary_unary(call, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=lambda b: b)
        for _ in range(50):
            method(request)
        start = time.perf_counter()
        for _ in range(jobs):
            method(request)
        return jobs / (time.perf_counter() - start)


async def concurrent_rate(target: str, call: str, request: object, jobs: int) -> float:
    """Calls/s of CONCURRENT_CALLERS async callers on one channel, `jobs` calls in all."""
    async with grpc.aio.insecure_channel(target) as ch:
        method = ch.unary_unary(call, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=lambda b: b)
        for _ in range(50):
            await method(request)
        left = jobs

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await method(request)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENT_CALLERS)))
        return jobs / (time.perf_counter() - start)


HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: The floor's key of the bare server that awaits one Redis PING per call.
WITH_REDIS = "uvloop + 1 Redis PING"
SUBMIT_JOB = "/conveyor.v1.JobService/SubmitJob"


def bare_floor(jobs: int, log_dir: Path, loop: str, redis_url: str = "") -> tuple[float, float]:
    from grpc_health.v1 import health_pb2

    port = free_port()
    server = spawn(f"bare-grpc-{loop}{'-redis' if redis_url else ''}",
                   [sys.executable, "-m", "bench.peers", "--bare-server", str(port), "--bare-loop", loop,
                    "--bare-redis", redis_url], dict(os.environ), log_dir)
    target = f"127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                with grpc.insecure_channel(target) as ch:
                    grpc.channel_ready_future(ch).result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                return False

        wait_for(up, 30, "bare grpc.aio server")
        req = health_pb2.HealthCheckRequest()
        return sequential_rate(target, HEALTH_CHECK, req, jobs), asyncio.run(
            concurrent_rate(target, HEALTH_CHECK, req, jobs))
    finally:
        server.stop()


# --- BullMQ --------------------------------------------------------------------------------
def bullmq(redis_url: str, *args: object, timeout: float = 900, keep: int = 0) -> dict[str, Any]:
    """One measurement of bench/bullmq/peer.mjs (its JSON line); with `keep`, BullMQ
    keeps only the newest `keep` completed jobs (else 100,000)."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, **({"BENCH_KEEP": str(keep)} if keep else {})}
    done = subprocess.run(["node", str(BULLMQ_DIR / "peer.mjs"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bullmq {args}: exit {done.returncode}\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
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


#: Submit -> completion with each end learned from a WatchQueue stream (JobWaiter).
STREAMED = "submit->end streamed p50 ms"


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


async def conveyor_bulk(stack: Stack, jobs: int, queue: str = "peers-enqueue-bulk") -> float:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(queue=queue))  # enqueue only: nothing runs
        req = request(queue)
        start = time.perf_counter()
        for i in range(0, jobs, BATCH):
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(BATCH, jobs - i)))
        return jobs / (time.perf_counter() - start)


def pause(stack: Stack, queue: str) -> None:
    with grpc.insecure_channel(stack.grpc_target) as ch:
        QueueServiceStub(ch).PauseQueue(queue_service_pb2.PauseQueueRequest(queue=queue))


def conveyor_one_by_one(stack: Stack, jobs: int) -> tuple[float, float, str]:
    """SubmitJob one by one, sequentially (sync client) and from CONCURRENT_CALLERS async
    callers, into a paused queue; and the cost of one submit over the sequential run
    (Redis commands, Redis CPU µs, gateway CPU µs)."""
    pause(stack, "peers-enqueue-one")
    req = request("peers-enqueue-one")
    r = redis.Redis.from_url(stack.redis_url)
    info, cpu = redis_info(r), stack_cpu(stack)
    sequential = sequential_rate(stack.grpc_target, SUBMIT_JOB, req, jobs)
    info2, cpu2 = redis_info(r), stack_cpu(stack)
    r.close()
    calls, redis_us, top = redis_cost(info, info2, jobs + 50)
    gateway_us = (cpu2["gateway"] - cpu["gateway"]) * 1e6 / (jobs + 50)
    concurrent = asyncio.run(concurrent_rate(stack.grpc_target, SUBMIT_JOB, req, jobs))
    return sequential, concurrent, (f"per submit: gateway {gateway_us:.0f} µs CPU, Redis {redis_us:.0f} µs CPU "
                                    f"over {calls:.1f} commands ({top})")


async def conveyor_process(stack: Stack, jobs: int, tag: str, costs: list[str] | None = None) -> float:
    """Jobs/s draining `jobs` from a paused queue; with `costs`, the cost per job
    (Redis commands and CPU, gateway and executor CPU) appended to it."""
    queue = f"peers-process-{tag}"
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(queue=queue))
        req = request(queue)
        for i in range(0, jobs, BATCH):
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(BATCH, jobs - i)))
        r = redis.Redis.from_url(stack.redis_url)
        done_key = f"{stack.prefix}:q:{queue}"

        def drained() -> bool:
            return int(r.hget(done_key, "ended:COMPLETED") or 0) >= jobs

        # The run ends when the queue's completed count (one HGET every 10 ms) reaches
        # `jobs`, as BullMQ's drain ends when its workers' completion counts add up:
        # nothing follows the events meanwhile (a WatchQueue follower costs the gateway
        # ~50 µs per event; bench.watchers measures the delivery of events).
        info, cpu = redis_info(r), stack_cpu(stack)
        start = time.perf_counter()
        await queues.ResumeQueue(queue_service_pb2.ResumeQueueRequest(queue=queue))
        await asyncio.to_thread(wait_for, drained, 900, "the drained jobs", 0.01)
        rate = jobs / (time.perf_counter() - start)
        info2, cpu2 = redis_info(r), stack_cpu(stack)
        r.close()
        if costs is not None:
            calls, redis_us, top = redis_cost(info, info2, jobs)
            per = {k: (cpu2[k] - cpu[k]) * 1e6 / jobs for k in cpu}
            costs.append(f"Conveyor per job: executor {per['executor']:.0f} µs CPU, gateway {per['gateway']:.0f} µs, "
                         f"Redis {redis_us:.0f} µs over {calls:.1f} commands ({top})")
        return rate


def keys_bytes(r: redis.Redis, pattern: str) -> int:
    total = 0
    for key in r.scan_iter(match=pattern, count=1000):
        total += int(r.memory_usage(key, samples=0) or 0)
    return total


def footprint(r: redis.Redis, pattern: str) -> tuple[int, int]:
    return keys_bytes(r, pattern), int(r.info("memory")["used_memory"])


async def conveyor_memory(stack: Stack, jobs: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Redis bytes per waiting job and per completed job kept (MEMORY USAGE over the
    stack's keys, used_memory): `jobs` submitted into a paused queue, then run."""
    queue = "peers-memory"
    r = redis.Redis.from_url(stack.redis_url)
    pattern = f"{stack.prefix}:*"
    empty = footprint(r, pattern)
    await conveyor_bulk(stack, jobs, queue)
    waiting = footprint(r, pattern)
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        queues = QueueServiceStub(ch)
        await queues.ResumeQueue(queue_service_pb2.ResumeQueueRequest(queue=queue))

        def drained() -> bool:
            return int(r.hget(f"{stack.prefix}:q:{queue}", "ended:COMPLETED") or 0) >= jobs

        await asyncio.to_thread(wait_for, drained, 300, "memory jobs to complete", 0.05)
    completed = footprint(r, pattern)
    r.close()

    def per(after: tuple[int, int]) -> tuple[float, float]:
        return (after[0] - empty[0]) / jobs, (after[1] - empty[1]) / jobs

    return per(waiting), per(completed)


def p50_p99(took: list[float]) -> tuple[float, float]:
    ordered = sorted(took)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


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
        return p50_p99(took)


async def conveyor_latency_streamed(stack: Stack, jobs: int) -> tuple[float, float]:
    """The same, each end learned from one WatchQueue stream opened before (the SDK's
    JobWaiter: what BullMQ's waitUntilFinished does with its QueueEvents), no WaitJob."""
    async with AsyncConveyorClient(stack.grpc_target) as client, JobWaiter(client, "peers-latency") as waiter:
        req = request("peers-latency")
        took = []
        for i in range(jobs + 20):
            start = time.perf_counter()
            sub = await waiter.submit(req)
            end = await waiter.wait(sub.id, timeout=30)
            if not end.completed:
                raise RuntimeError(f"latency job ended {end.state}")
            if i >= 20:
                took.append((time.perf_counter() - start) * 1000)
        if waiter.answered_by_wait_job:
            raise RuntimeError(f"{waiter.answered_by_wait_job} ends were not seen on the stream")
        return p50_p99(took)


def bullmq_cost(drained: dict[str, Any], jobs: int) -> str:
    calls, redis_us, top = redis_cost(parse_info(drained["info_before"]), parse_info(drained["info_after"]), jobs)
    return (f"BullMQ per job: workers {drained['worker_cpu_us'] / jobs:.0f} µs CPU, "
            f"Redis {redis_us:.0f} µs over {calls:.1f} commands ({top})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per measurement")
    parser.add_argument("--one-by-one", type=int, default=3_000, help="jobs enqueued one by one")
    parser.add_argument("--slots", type=int, default=8, help="slots (threads, concurrency) per worker process")
    parser.add_argument("--latency-jobs", type=int, default=300, help="jobs one at a time for the latency")
    parser.add_argument("--memory-jobs", type=int, default=5_000, help="jobs for the bytes per job")
    parser.add_argument("--bare-server", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bare-loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--bare-redis", default="", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.bare_server:
        bare_server(ns.bare_server, ns.bare_loop, ns.bare_redis)
        return
    if shutil.which("node") is None:
        sys.exit("BullMQ runs on Node.js: install node and npm first")
    if not (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
        print("installing BullMQ from the npm registry: npm ci --prefix bench/bullmq", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(BULLMQ_DIR)], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-peers-"))
    redis_proc, url = start_redis(tmp / "redis")
    rows: dict[str, dict[str, str]] = {"Dramatiq": {}, "BullMQ (Node)": {}, "Conveyor": {}}
    figures: dict[str, dict[str, float]] = {name: {} for name in rows}
    floor: dict[str, tuple[float, float]] = {}  # loop -> (sequential, concurrent)
    costs: list[str] = []

    def note(system: str, column: str, value: float, text: str | None = None) -> None:
        figures[system][column] = value
        rows[system][column] = text or f"{value:,.0f}"
        print(f"  {system:<14} {column:<22} {rows[system][column]}", flush=True)

    print(f"no-op jobs: {ns.jobs:,} per run ({ns.one_by_one:,} one by one), {ns.slots} slots per process, "
          f"one redis-server, {os.cpu_count()} cores", flush=True)
    try:
        for loop in ("asyncio", "uvloop"):
            floor[loop] = bare_floor(ns.one_by_one, tmp / "bare", loop)
            print(f"  bare grpc.aio health Check on {loop}: {floor[loop][0]:,.0f}/s sequential, "
                  f"{floor[loop][1]:,.0f}/s from {CONCURRENT_CALLERS} callers", flush=True)
        floor[WITH_REDIS] = bare_floor(ns.one_by_one, tmp / "bare", "uvloop", url)
        print(f"  the same on uvloop, one Redis PING per call: {floor[WITH_REDIS][0]:,.0f}/s sequential, "
              f"{floor[WITH_REDIS][1]:,.0f}/s from {CONCURRENT_CALLERS} callers", flush=True)
        note("BullMQ (Node)", "enqueue 1-by-1 /s", bullmq(url, "enqueue", "peers-one", ns.one_by_one)["rate"])
        note("BullMQ (Node)", "enqueue bulk /s", bullmq(url, "bulk", "peers-bulk", ns.jobs)["rate"])
        note("Dramatiq", "enqueue 1-by-1 /s", dramatiq_enqueue(url, ns.one_by_one))
        for procs in (1, 2):
            column = f"process, {procs} proc /s"
            drained = bullmq(url, "drain", f"peers-drain-{procs}", ns.jobs, procs, ns.slots)
            note("BullMQ (Node)", column, drained["rate"])
            if procs == 2:
                costs.append(bullmq_cost(drained, ns.jobs))
                # The same with Conveyor's default retention (the newest 100 completed jobs kept).
                kept = bullmq(url, "drain", "peers-drain-keep", ns.jobs, procs, ns.slots, keep=100)
                note("BullMQ (Node)", "process, 2 proc, 100 kept /s", kept["rate"])
                costs.append(bullmq_cost(kept, ns.jobs).replace("BullMQ per job", "BullMQ per job, 100 kept"))
            note("Dramatiq", column, dramatiq_process(url, ns.jobs, procs, ns.slots, tmp / "dramatiq"))
            stack = conveyor_stack(url, tmp, f"conveyor-{procs}", procs, ns.slots)
            try:
                stack.start_gateway()
                stack.start_executor()
                if procs == 1:
                    sequential, concurrent, cost = conveyor_one_by_one(stack, ns.one_by_one)
                    note("Conveyor", "enqueue 1-by-1 /s", sequential,
                         f"{sequential:,.0f} ({CONCURRENT_CALLERS} callers: {concurrent:,.0f})")
                    figures["Conveyor"]["concurrent"] = concurrent
                    costs.append(f"Conveyor {cost}")
                    note("Conveyor", "enqueue bulk /s", asyncio.run(conveyor_bulk(stack, ns.jobs)))
                    p50, p99 = asyncio.run(conveyor_latency(stack, ns.latency_jobs))
                    note("Conveyor", "submit->done p50 ms", p50, f"{p50:.1f} (p99 {p99:.1f})")
                    p50, p99 = asyncio.run(conveyor_latency_streamed(stack, ns.latency_jobs))
                    note("Conveyor", STREAMED, p50, f"{p50:.1f} (p99 {p99:.1f})")
                note("Conveyor", column, asyncio.run(conveyor_process(
                    stack, ns.jobs, str(procs), costs if procs == 2 else None)))
            finally:
                stack.stop()
        lat = bullmq(url, "latency", "peers-latency", ns.latency_jobs, ns.slots)
        note("BullMQ (Node)", "submit->done p50 ms", lat["p50"], f"{lat['p50']:.1f} (p99 {lat['p99']:.1f})")
        memory = bullmq(url, "memory", "peers-memory", ns.memory_jobs, ns.slots)
        stack = conveyor_stack(url, tmp, "conveyor-memory", 1, ns.slots)
        stack.env["CONVEYOR_KEEP_COMPLETED"] = str(ns.memory_jobs)
        try:
            stack.start_gateway()
            stack.start_executor()
            waiting, completed = asyncio.run(conveyor_memory(stack, ns.memory_jobs))
        finally:
            stack.stop()
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
    if STREAMED in ours and theirs.get("submit->done p50 ms"):
        ratios.append(f"{STREAMED}: {theirs['submit->done p50 ms'] / ours[STREAMED]:.2f}x")
    print("Conveyor / BullMQ (above 1: Conveyor better): " + ", ".join(ratios))
    if STREAMED in ours:
        print(f"Conveyor {STREAMED}: {rows['Conveyor'][STREAMED]} (SubmitJob, the end on one WatchQueue "
              "stream opened before: the SDK's JobWaiter, as BullMQ's QueueEvents)")
    for loop, (sequential, concurrent) in floor.items():
        print(f"SubmitJob (gateway on uvloop) / bare grpc.aio Check on {loop}: sequential "
              f"{ours['enqueue 1-by-1 /s'] / sequential:.2f}x, {CONCURRENT_CALLERS} callers "
              f"{ours['concurrent'] / concurrent:.2f}x" + ("" if loop == WITH_REDIS else " (target >= 0.8x)"))
    (seq_redis, conc_redis), (seq_bare, conc_bare) = floor[WITH_REDIS], floor["uvloop"]
    print(f"one Redis round trip costs the bare server on uvloop: {seq_redis / seq_bare:.2f}x sequential, "
          f"{conc_redis / conc_bare:.2f}x from {CONCURRENT_CALLERS} callers")
    for line in costs:
        print(line)
    bw, bc = memory["waiting"], memory["completed"]
    print(f"Redis bytes per job ({ns.memory_jobs:,} jobs; MEMORY USAGE of the keys / used_memory delta): "
          f"waiting Conveyor {waiting[0]:,.0f} / {waiting[1]:,.0f}, BullMQ {bw['keys']:,.0f} / {bw['used']:,.0f}; "
          f"completed kept Conveyor {completed[0]:,.0f} / {completed[1]:,.0f}, "
          f"BullMQ {bc['keys']:,.0f} / {bc['used']:,.0f}")


if __name__ == "__main__":
    main()
