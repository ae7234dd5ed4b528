"""Browser jobs: a warm pool against launching a browser per job, throughput with 1,
2 and 4 slots, and memory per concurrent job (PSS, not RSS).

    .venv/bin/python -m bench.browser [--jobs 30]

(a) In one executor process, the same trivial task (open a page on loopback, fill,
    click, read the greeting) through the same runner: once from a warm pool, once
    with a pool that relaunches Chromium for every job (browser_recycle_after=1);
    both with jobs arriving 0.5 s apart (the warm pool opens the next page in
    between) and back to back (no time for that).
(b) Through the whole system (gateway + executor processes): browser jobs/s with
    CONVEYOR_EXECUTOR_SLOTS = CONVEYOR_BROWSER_SLOTS = 1, 2, 4 (the figures that
    chose the default browser slots, see conveyor/settings.py), and the host's
    defaults.
(c) With 4 jobs holding their pages open at once: the PSS of the executor worker and
    every Chromium process under it, minus the same when idle, per job.

Pages are served on 127.0.0.1 only; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from conveyor.artifacts import LocalArtifactStore
from conveyor.processes import descendants
from conveyor.settings import (
    Settings,
    available_memory_mib,
    default_browser_slots,
    default_executor_slots,
    host_cores,
)
from conveyor.v1 import job_pb2, job_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskRunner
from tests.support.processes import ROOT, Stack, stack_env, start_redis

PAGES = ROOT / "clients" / "demo"


def serve_pages() -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGES))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def trivial_task(base: str, hold: str | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"navigate": {"url": f"{base}/form.html"}},
        {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
        {"click": {"target": {"selector": "#submit"}}},
        {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
    ]
    if hold:
        steps.insert(1, {"name": "hold", "wait": {"duration": hold}})
    return {"browser": {"steps": steps}}


async def runner_times(settings: Settings, data: Path, base: str, jobs: int, gap: float) -> list[float]:
    pool = BrowserPool(settings, run_dir=data / "browsers")
    await pool.start()
    runner = BrowserTaskRunner(pool, LocalArtifactStore(data / "artifacts"), settings)
    task = json_format.ParseDict(trivial_task(base)["browser"], task_pb2.BrowserTask())

    async def report(*_: object) -> None:
        return None

    times = []
    try:
        await runner.run("warmup", task, report)
        for i in range(jobs):
            await asyncio.sleep(gap)  # the next job arrives
            t = time.perf_counter()
            result = await runner.run(f"job-{i}", task, report)
            times.append((time.perf_counter() - t) * 1000)
            assert result.values["greeting"].string_value == "Hello Ada"
    finally:
        await pool.close()
    return times


async def stack_throughput(stack: Stack, base: str, jobs: int) -> float:
    req = json_format.ParseDict(trivial_task(base), job_service_pb2.SubmitJobRequest())
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        warm = await stub.SubmitJob(req)
        await stub.WaitJob(job_service_pb2.WaitJobRequest(id=warm.id))
        t = time.perf_counter()
        ids = [r.id for r in (await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * jobs))).results]
        for job_id in ids:
            done = (await stub.WaitJob(job_service_pb2.WaitJobRequest(id=job_id))).job
            assert done.state == job_pb2.JOB_STATE_COMPLETED, done.error.message
        return jobs / (time.perf_counter() - t)


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


async def memory_per_job(stack: Stack, base: str, concurrent: int) -> tuple[int, int]:
    """(idle PSS, PSS per concurrent job) in KiB, for the executor's whole process tree."""
    executor = stack.executors[0].pid
    req = json_format.ParseDict(trivial_task(base, hold="4s"), job_service_pb2.SubmitJobRequest())
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        idle = pss_kib([executor, *descendants(executor)])
        ids = [(await stub.SubmitJob(req)).id for _ in range(concurrent)]

        async def all_holding() -> bool:
            for job_id in ids:
                job = (await stub.GetJob(job_service_pb2.GetJobRequest(id=job_id))).job
                if job.state != job_pb2.JOB_STATE_ACTIVE or "hold" not in job.progress_message:
                    return False
            return True

        deadline = time.monotonic() + 60
        while not await all_holding():
            if time.monotonic() > deadline:
                raise TimeoutError("jobs did not reach their hold step")
            await asyncio.sleep(0.1)
        busy = pss_kib([executor, *descendants(executor)])
        for job_id in ids:
            await stub.WaitJob(job_service_pb2.WaitJobRequest(id=job_id))
    return idle, (busy - idle) // concurrent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--system-only", action="store_true", help="skip (a), the in-process pool figures")
    ns = parser.parse_args()
    print(f"host: {host_cores()} cores, {available_memory_mib()} MiB available; default slots: "
          f"browser {default_browser_slots()}, all kinds {default_executor_slots()}")

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-browser-"))
    server, base = serve_pages()
    warm_settings = Settings(data_dir=tmp / "warm", allowed_hosts=["127.0.0.1"], max_concurrent_browsers=1)
    cold_settings = Settings(data_dir=tmp / "cold", allowed_hosts=["127.0.0.1"], max_concurrent_browsers=1,
                             browser_recycle_after=1)
    for gap, label in () if ns.system_only else ((0.5, "jobs 0.5 s apart"), (0.0, "back to back")):
        warm = asyncio.run(runner_times(warm_settings, tmp / "warm", base, ns.jobs, gap))
        cold = asyncio.run(runner_times(cold_settings, tmp / "cold", base, max(5, ns.jobs // 3), gap))
        print(f"trivial browser job, {label:16}: warm pool p50 {statistics.median(warm):6.1f} ms, "
              f"browser per job p50 {statistics.median(cold):6.1f} ms: "
              f"warm is {statistics.median(cold) / statistics.median(warm):.1f}x faster")

    redis_proc, url = start_redis(tmp / "redis")
    try:
        for slots in (1, 2, 4):
            stack = Stack(url, stack_env(url, tmp / f"s{slots}", CONVEYOR_EXECUTOR_SLOTS=str(slots),
                                         CONVEYOR_BROWSER_SLOTS=str(slots),
                                         CONVEYOR_MAX_CONCURRENT_BROWSERS=str(min(slots, 2)),
                                         CONVEYOR_LOG_LEVEL="WARNING"), tmp / "logs")
            try:
                stack.start_gateway()
                stack.start_executor()
                rate = asyncio.run(stack_throughput(stack, base, ns.jobs))
                print(f"browser jobs/s through the system, {slots} slot(s): {rate:6.2f}")
                if slots == 4:
                    idle, per_job = asyncio.run(memory_per_job(stack, base, 4))
                    print(f"executor tree PSS idle (warm pool)      : {idle / 1024:7.1f} MiB")
                    print(f"PSS per concurrent browser job          : {per_job / 1024:7.1f} MiB (4 at once)")
            finally:
                stack.stop()
    finally:
        redis_proc.stop()
        server.shutdown()


if __name__ == "__main__":
    main()
