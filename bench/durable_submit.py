"""What CONVEYOR_REDIS_WAIT_REPLICAS costs a submit: SubmitJob through the gateway
(grpc.aio, loopback) on a Redis primary with one replica, with the reply sent as soon
as the primary has the job (default) and after WAIT 1 (the job on the replica too),
each through a plain redis:// URL and through Sentinel (redis+sentinel://).

    .venv/bin/python -m bench.durable_submit [--jobs 1000] [--concurrency 50] [--rounds 5]

For each setting: one caller submitting one job at a time (jobs/s, p50 and p99 of a
submit) and --concurrency callers at once (jobs/s, p50). Each setting has a gateway of
its own, all running at once; they take turns, --rounds times, and the medians are
shown (no executor: the jobs stay waiting).
Loopback only; bounded; stops what it starts, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import grpc

from conveyor.redis_connection import connect
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Priority
from conveyor.transport import store_policy
from conveyor.v1 import job_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.processes import Stack, stack_env
from tests.support.sentinel import start_sentinel_group

#: name -> (URL, CONVEYOR_REDIS_WAIT_REPLICAS)
SETTINGS = {
    "redis:// no WAIT": ("plain", "0"),
    "redis:// WAIT 1": ("plain", "1"),
    "sentinel no WAIT": ("sentinel", "0"),
    "sentinel WAIT 1": ("sentinel", "1"),
}


def queue_of(name: str) -> str:
    return "bench-" + "".join(c if c.isalnum() else "-" for c in name)


async def submit_loop(jobs: JobServiceStub, queue: str, count: int, latencies: list[float]) -> None:
    request = job_service_pb2.SubmitJobRequest(queue=queue, noop=task_pb2.NoopTask())
    for _ in range(count):
        started = time.perf_counter()
        await jobs.SubmitJob(request, timeout=30)
        latencies.append(time.perf_counter() - started)


async def measure(targets: dict[str, str], jobs_total: int, callers: int, rounds: int,
                  ) -> dict[str, list[dict[str, float]]]:
    """Every setting's gateway in turn, `rounds` times: a shifting load on the machine
    weighs on all of them alike."""
    channels = {name: grpc.aio.insecure_channel(target) for name, target in targets.items()}
    stubs = {name: JobServiceStub(ch) for name, ch in channels.items()}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    try:
        for name, jobs in stubs.items():
            await submit_loop(jobs, queue_of(name), 50, [])  # warm: connections, scripts
        for r in range(rounds):
            for name, jobs in stubs.items():
                queue = queue_of(name)
                sequential: list[float] = []
                started = time.perf_counter()
                await submit_loop(jobs, queue, jobs_total, sequential)
                seq_rate = jobs_total / (time.perf_counter() - started)
                concurrent: list[float] = []
                per_caller = max(1, jobs_total // callers)
                started = time.perf_counter()
                await asyncio.gather(*(submit_loop(jobs, queue, per_caller, concurrent) for _ in range(callers)))
                conc_rate = per_caller * callers / (time.perf_counter() - started)
                q = statistics.quantiles(sequential, n=100)
                got = {"seq_per_s": seq_rate, "seq_p50_ms": q[49] * 1000, "seq_p99_ms": q[98] * 1000,
                       "conc_per_s": conc_rate, "conc_p50_ms": statistics.median(concurrent) * 1000}
                results[name].append(got)
                print(f"round {r + 1} {name:17} " + "  ".join(f"{k} {v:8.1f}" for k, v in got.items()), flush=True)
    finally:
        for ch in channels.values():
            await ch.close()
    return results


async def store_level(urls: dict[str, str], jobs_total: int, callers: int, rounds: int,
                      ) -> dict[str, list[dict[str, float]]]:
    """The same without gRPC and the gateway: JobStore.submit in this process, so that
    what WAIT adds (the replica's acknowledgement) is not hidden by the gateway's CPU."""
    stores: dict[str, JobStore] = {}
    for name, (how, wait) in SETTINGS.items():
        prefix = f"bs{len(stores)}"
        policy = replace(store_policy(Settings(key_prefix=prefix)), wait_replicas=int(wait))
        stores[name] = JobStore(connect(urls[how], max_connections=64), prefix, policy)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}

    def job() -> NewJob:
        return NewJob(id=uuid.uuid4().hex, queue="bench", owner="bench", priority=Priority.NORMAL, max_attempts=1,
                      timeout_ms=60_000, run_at_ms=0, spec=b"", kind="noop")

    async def loop(store: JobStore, count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await store.submit(job())
            latencies.append(time.perf_counter() - started)

    try:
        for store in stores.values():
            await loop(store, 50, [])
        for r in range(rounds):
            for name, store in stores.items():
                sequential: list[float] = []
                started = time.perf_counter()
                await loop(store, jobs_total, sequential)
                seq_rate = jobs_total / (time.perf_counter() - started)
                concurrent: list[float] = []
                per_caller = max(1, jobs_total // callers)
                started = time.perf_counter()
                await asyncio.gather(*(loop(store, per_caller, concurrent) for _ in range(callers)))
                conc_rate = per_caller * callers / (time.perf_counter() - started)
                q = statistics.quantiles(sequential, n=100)
                got = {"seq_per_s": seq_rate, "seq_p50_ms": q[49] * 1000, "seq_p99_ms": q[98] * 1000,
                       "conc_per_s": conc_rate, "conc_p50_ms": statistics.median(concurrent) * 1000}
                results[name].append(got)
                print(f"store round {r + 1} {name:17} " + "  ".join(f"{k} {v:8.1f}" for k, v in got.items()),
                      flush=True)
    finally:
        for store in stores.values():
            await store.client.aclose()
    return results


def table(title: str, results: dict[str, list[dict[str, float]]], callers: int) -> None:
    print(f"\n{title}")
    print(f"| setting | 1-by-1 /s | p50 ms | p99 ms | {callers} callers /s | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rounds in results.items():
        m = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        print(f"| {name} | {m['seq_per_s']:,.0f} | {m['seq_p50_ms']:.2f} | {m['seq_p99_ms']:.2f} "
              f"| {m['conc_per_s']:,.0f} | {m['conc_p50_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="submits per measurement (each kind)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp_dir:
        tmp = Path(tmp_dir)
        group = start_sentinel_group(tmp / "redis", replicas=1, sentinels=1)
        stacks: list[Stack] = []
        try:
            urls = {"plain": f"redis://127.0.0.1:{group.primary_port()}/0", "sentinel": group.url}
            targets: dict[str, str] = {}
            for name, (how, wait) in SETTINGS.items():
                url = urls[how]
                s = Stack(url, stack_env(url, tmp / f"{how}-{wait}", CONVEYOR_REDIS_WAIT_REPLICAS=wait,
                                         CONVEYOR_LOG_LEVEL="WARNING"), tmp / "logs")
                stacks.append(s)
                s.start_gateway()
                targets[name] = s.grpc_target
            results = asyncio.run(measure(targets, ns.jobs, ns.concurrency, ns.rounds))
            in_process = asyncio.run(store_level(urls, ns.jobs, ns.concurrency, ns.rounds))
        finally:
            for s in stacks:
                s.stop()
            group.stop()
    what = f"median of {ns.rounds} round(s), {ns.jobs} submits each"
    table(f"SubmitJob through the gateway ({what})", results, ns.concurrency)
    table(f"JobStore.submit in-process, no gRPC ({what})", in_process, ns.concurrency)


if __name__ == "__main__":
    main()
