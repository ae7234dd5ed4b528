"""Scale-out on one machine: two gateways and one, two, three executors on one Redis,
no-op jobs submitted through both gateways, and where the time goes as executors are
added: jobs/s, Redis CPU (% of its one core, from INFO cpu), the machine's CPU, and
Redis commands per job (INFO commandstats, commands run inside scripts included).

    .venv/bin/python -m bench.scale_out [--jobs 4000] [--executors 3] [--slots 8]

The third executor is browser-less (CONVEYOR_EXECUTOR_KINDS=noop: it starts no
Chromium), as in the deployment docs/scale-out.md describes; the first two serve every
kind. Before the runs it also measures what an idle stack costs Redis (commands/s per
idle executor and gateway: heartbeats, blocking reads), the figure that decides how
many executors one Redis can carry. The numbers feed docs/scale-out.md.

Loopback only; bounded; starts and stops its own redis-server and services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from conveyor.processes import descendants
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.transport import store_policy
from conveyor.v1 import job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.processes import Process, Stack, stack_env, start_redis

BATCH = 500
#: Commands that a client sends itself (everything else in commandstats ran inside a script,
#: or is one of these sent directly: the split is approximate for the direct ones).
SCRIPT_CALLS = ("eval", "evalsha", "fcall", "eval_ro", "evalsha_ro")


@dataclass
class RedisSample:
    at: float
    cpu: float  # used_cpu_user + used_cpu_sys, seconds
    calls: dict[str, int]
    clients: int

    @classmethod
    def take(cls, r: redis.Redis) -> RedisSample:
        cpu = r.info("cpu")
        stats = r.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        clients = int(r.info("clients")["connected_clients"])
        return cls(time.perf_counter(), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls, clients)

    def minus(self, before: RedisSample) -> dict[str, int]:
        out = {k: v - before.calls.get(k, 0) for k, v in self.calls.items()}
        for k in ("info", "config|resetstat"):  # the bench's own
            out.pop(k, None)
        return {k: v for k, v in out.items() if v > 0}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(stat[11]) + int(stat[12])
    return total / os.sysconf("SC_CLK_TCK")


def tree(p: Process) -> list[int]:
    return [p.pid, *descendants(p.pid)]


@dataclass
class Phase:
    executors: int
    jobs: int
    seconds: float
    redis_cpu_s: float
    machine_pct: float
    commands: dict[str, int]
    gateway_cpu_s: float
    executor_cpu_s: float
    clients: int
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def redis_pct(self) -> float:
        return 100 * self.redis_cpu_s / self.seconds

    def per_job(self, n: float) -> float:
        return n / self.jobs


async def drain(targets: list[str], queue: str, jobs: int) -> None:
    """Submit `jobs` no-op jobs to `queue`, half through each gateway in batches, and
    return once the queue counts every one completed."""
    req = job_service_pb2.SubmitJobRequest(queue=queue, noop=task_pb2.NoopTask())
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    try:
        stubs = [JobServiceStub(ch) for ch in channels]
        queues = QueueServiceStub(channels[-1])

        async def submit(stub: JobServiceStub, n: int) -> None:
            for i in range(0, n, BATCH):
                await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(BATCH, n - i)))

        share = jobs // len(stubs)
        await asyncio.gather(*(submit(s, share + (jobs - share * len(stubs) if i == 0 else 0))
                               for i, s in enumerate(stubs)))
        while True:
            q = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=queue))).queue
            if q.counts.completed >= jobs:
                return
            if q.counts.failed or q.counts.cancelled:
                raise RuntimeError(f"jobs failed: {q.counts}")
            await asyncio.sleep(0.02)
    finally:
        for ch in channels:
            await ch.close()


def run_phase(stack: Stack, r: redis.Redis, redis_pid: int, n_exec: int, jobs: int, rounds: int) -> Phase:
    queue = f"scale-{n_exec}"
    asyncio.run(drain(stack.gateway_targets, queue + "-warm", max(200, jobs // 10)))  # warm-up, not counted
    best: Phase | None = None
    rates = []
    for i in range(rounds):
        gw = [p for g in stack.gateways for p in tree(g)]
        ex = [p for e in stack.executors for p in tree(e)]
        before, busy0 = RedisSample.take(r), machine_busy()
        g0, e0 = cpu_seconds(gw), cpu_seconds(ex)
        start = time.perf_counter()
        asyncio.run(drain(stack.gateway_targets, f"{queue}-{i}", jobs))
        seconds = time.perf_counter() - start
        after, busy1 = RedisSample.take(r), machine_busy()
        phase = Phase(
            executors=n_exec, jobs=jobs, seconds=seconds, redis_cpu_s=after.cpu - before.cpu,
            machine_pct=100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1),
            commands=after.minus(before), gateway_cpu_s=cpu_seconds(gw) - g0, executor_cpu_s=cpu_seconds(ex) - e0,
            clients=after.clients,
        )
        rates.append(phase.rate)
        if best is None or phase.rate > best.rate:
            best = phase
    assert best is not None
    best.rates = rates
    return best


def idle_cost(r: redis.Redis, seconds: float) -> tuple[float, dict[str, int]]:
    before = RedisSample.take(r)
    time.sleep(seconds)
    after = RedisSample.take(r)
    calls = after.minus(before)
    return sum(calls.values()) / (after.at - before.at), calls


async def simulate(url: str, executors: int, gateways: int, seconds: float) -> tuple[float, float, dict[str, int]]:
    """The background cost of a big deployment, with no job running: `executors` worker
    processes' heartbeats (heartbeat.lua, once a second each, as executor/runtime.py
    sends them) and `gateways` gateways' admission loops (promote + dispatch 4 times a
    second, reap once a second: gateway/admission.py), driven straight at the store from
    this process. Returns (Redis CPU % of a core, commands/s, commands by name)."""
    from gateway.admission import LOST_EXECUTOR, REAP_EVERY_SECONDS, TICK_SECONDS

    prefix = f"sim{executors}"
    client = connect(url, max_connections=64)
    store = JobStore(client, prefix, store_policy(Settings(key_prefix=prefix)))
    r = redis.Redis.from_url(url, decode_responses=True)
    ids = [f"sim-executor-{i}" for i in range(executors)]
    info = {"host": "sim", "pid": 0, "worker": 0, "completed": 0}

    async def beat_all() -> None:
        await asyncio.gather(*(store.heartbeat(e, 8, 6000, 10_000, info, [], kinds=["noop", "browser"]) for e in ids))

    async def gateway_second() -> None:
        await store.reap(LOST_EXECUTOR)
        for _ in range(round(REAP_EVERY_SECONDS / TICK_SECONDS)):
            await store.promote_due()
            await store.dispatch(500)

    try:
        await beat_all()  # registered
        before = RedisSample.take(r)
        rounds = max(1, round(seconds))
        for _ in range(rounds):
            t = time.perf_counter()
            await asyncio.gather(beat_all(), *(gateway_second() for _ in range(gateways)))
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
        after = RedisSample.take(r)
    finally:
        await client.aclose()
    elapsed = after.at - before.at
    calls = after.minus(before)
    return 100 * (after.cpu - before.cpu) / elapsed, sum(calls.values()) / elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4000, help="no-op jobs per measured round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per executor count (the best is shown)")
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--slots", type=int, default=8, help="slots per executor process")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--simulate", default="100x20",
                        help="executor worker processes x gateways whose background cost (heartbeats, "
                        "admission loops; no job) is driven straight at Redis after the runs; '' for none")
    ns = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-scale-"))
    redis_proc, url = start_redis(tmp / "redis")
    r = redis.Redis.from_url(url, decode_responses=True)
    stack = Stack(url, stack_env(url, tmp / "data", CONVEYOR_EXECUTOR_SLOTS=str(ns.slots),
                                 CONVEYOR_BROWSER_SLOTS="1", CONVEYOR_QUEUE_CONCURRENCY="1000",
                                 CONVEYOR_KEEP_COMPLETED="1000000", CONVEYOR_LOG_LEVEL="WARNING"), tmp / "logs")
    phases: list[Phase] = []
    idle: list[tuple[str, float]] = []
    by_name: dict[str, int] = {}
    try:
        print(f"one redis-server ({r.info('server')['redis_version']}), 2 gateways, 1..{ns.executors} executors "
              f"x {ns.slots} slots, {os.cpu_count()} cores; {ns.jobs} no-op jobs a round, best of {ns.rounds}",
              flush=True)
        stack.start_gateway()
        stack.start_second_gateway()
        idle.append(("2 gateways, no executor", idle_cost(r, ns.idle_seconds)[0]))
        for n in range(1, ns.executors + 1):
            browserless = n == 3
            if browserless:
                stack.start_executor(CONVEYOR_EXECUTOR_KINDS="noop")
            else:
                stack.start_executor()
            idle.append((f"2 gateways, {n} executor(s), idle", idle_cost(r, ns.idle_seconds)[0]))
            phase = run_phase(stack, r, redis_proc.pid, n, ns.jobs, ns.rounds)
            phases.append(phase)
            print(f"  {n} executor(s){' (3rd browser-less)' if browserless else ''}: {phase.rate:7,.0f} jobs/s "
                  f"(rounds {', '.join(f'{x:,.0f}' for x in phase.rates)})  redis CPU {phase.redis_pct:5.1f}% of a core"
                  f"  machine {phase.machine_pct:5.1f}% of {100 * (os.cpu_count() or 1)}%", flush=True)
        by_name = {}  # Redis connections by client name, after the last run (pools keep theirs open)
        for c in r.client_list():
            name = c.get("name") or f"(unnamed; last command {c.get('cmd')})"
            by_name[name] = by_name.get(name, 0) + 1
        stack.stop()
        sims: list[tuple[int, int, float, float, dict[str, int]]] = []
        if ns.simulate:
            n_exec, n_gw = (int(x) for x in ns.simulate.split("x"))
            for e, g in ((n_exec // 10, max(1, n_gw // 10)), (n_exec, n_gw)):
                sims.append((e, g, *asyncio.run(simulate(url, e, g, 10))))
    finally:
        stack.stop()
        redis_proc.stop()

    print("\nper job (best round of each):")
    print("  executors  jobs/s   redis µs  redis cmds  script calls  gateway µs  executor µs  redis clients")
    for p in phases:
        cmds = sum(p.commands.values())
        scripts = sum(v for k, v in p.commands.items() if k in SCRIPT_CALLS)
        print(f"  {p.executors:9d} {p.rate:8,.0f} {p.per_job(p.redis_cpu_s) * 1e6:10.0f} {p.per_job(cmds):11.1f}"
              f" {p.per_job(scripts):13.2f} {p.per_job(p.gateway_cpu_s) * 1e6:11.0f}"
              f" {p.per_job(p.executor_cpu_s) * 1e6:12.0f} {p.clients:14d}")
    last = phases[-1]
    print(f"\nRedis commands per job with {last.executors} executors (INFO commandstats; inside scripts included):")
    for name, calls in sorted(last.commands.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {name:28s} {last.per_job(calls):6.2f}")
    print(f"\nRedis connections after the last run, by client name ({sum(by_name.values())} in all; "
          f"2 gateways, {ns.executors} executors x 1 worker process x {ns.slots} slots, this bench's own 1):")
    for name, n in sorted(by_name.items()):
        print(f"  {name:34s} {n:4d}")
    print("\nidle cost (Redis commands/s):")
    for what, rate in idle:
        print(f"  {what:34s} {rate:8.1f}")
    for e, g, pct, rate, sim_calls in sims:
        top = ", ".join(f"{k} {v / 10:,.0f}" for k, v in sorted(sim_calls.items(), key=lambda kv: -kv[1])[:6])
        print(f"background cost of {e} executor workers x {g} gateways, no job (simulated, 10 s): "
              f"Redis {pct:.1f}% of a core, {rate:,.0f} commands/s ({top} /s)")
    per_redis_core = 1e6 / (last.per_job(last.redis_cpu_s) * 1e6)
    print(f"\nRedis CPU per job {last.per_job(last.redis_cpu_s) * 1e6:.0f} µs: one Redis core saturates near "
          f"{per_redis_core:,.0f} jobs/s (with nothing else on its core)")


if __name__ == "__main__":
    main()
