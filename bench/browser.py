"""Browser jobs: the acceptance suite against plain Playwright, a warm pool against
launching a browser per job, throughput with 1, 2 and 4 slots, and memory per
concurrent job (PSS, not RSS).

    .venv/bin/python -m bench.browser [--jobs 30] [--suite-only] [--rounds 2]

(s) The acceptance suite (tests/acceptance/: 24 tests of the vendored TodoMVC app,
    served on loopback) both ways, interleaved, `--rounds` times: plain Playwright
    for Python (one process, sequential, one browser, a new context per test; timed
    from the browser's launch), and Conveyor (a fresh gateway and executor each time,
    one SubmitJobs of the 24 jobs, timed from the submit to the last job's end) with
    queue concurrency 1 and with the host's defaults; every test must pass.

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
from tests.acceptance import conveyor_suite, playwright_suite
from tests.acceptance.app_server import serve_app
from tests.acceptance.submit import run_jobs_sync
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


def plain_suite_seconds(app_url: str) -> float:
    started = time.perf_counter()
    outcomes = playwright_suite.run_suite(app_url)
    seconds = time.perf_counter() - started
    failed = [o for o in outcomes if not o.passed]
    assert not failed, f"plain Playwright: {failed}"
    return seconds


def conveyor_suite_seconds(redis_url: str, tmp: Path, app_url: str, label: str, **env: str) -> float:
    """A fresh gateway and executor (host defaults but `env`), the 24 jobs in one
    SubmitJobs; seconds from the submit to the last job's end."""
    environment = stack_env(redis_url, tmp / label, CONVEYOR_LOG_LEVEL="WARNING", **env)
    if "CONVEYOR_EXECUTOR_SLOTS" not in env:
        environment.pop("CONVEYOR_EXECUTOR_SLOTS")  # stack_env's test value: the host's default here
    stack = Stack(redis_url, environment, tmp / "logs")
    try:
        stack.start_gateway()
        stack.start_executor()
        jobs, seconds = run_jobs_sync(stack.grpc_target, conveyor_suite.suite(app_url))
    finally:
        stack.stop()
    failed = [(j.labels["test"], j.error.message) for j in jobs if j.state != job_pb2.JOB_STATE_COMPLETED]
    assert not failed, f"Conveyor ({label}): {failed}"
    return seconds


def suite_comparison(redis_url: str, tmp: Path, rounds: int) -> None:
    sides: dict[str, list[float]] = {"plain": [], "c1": [], "default": []}
    with serve_app() as app_url:
        for r in range(rounds):
            order = ["plain", "c1", "default"] if r % 2 == 0 else ["default", "c1", "plain"]
            for side in order:
                if side == "plain":
                    seconds = plain_suite_seconds(app_url)
                elif side == "c1":
                    seconds = conveyor_suite_seconds(redis_url, tmp, app_url, f"c1-{r}", QUEUE_CONCURRENCY="1")
                else:
                    seconds = conveyor_suite_seconds(redis_url, tmp, app_url, f"default-{r}")
                sides[side].append(seconds)
            plain, c1, default = (sides[k][-1] for k in ("plain", "c1", "default"))
            print(f"acceptance suite, round {r + 1}: plain Playwright {plain:6.2f} s | Conveyor, queue "
                  f"concurrency 1 {c1:6.2f} s ({c1 / plain:.2f}x) | Conveyor, defaults {default:6.2f} s "
                  f"({default / plain:.2f}x)", flush=True)
    plain, c1, default = (statistics.median(sides[k]) for k in ("plain", "c1", "default"))
    print(f"acceptance suite (24 tests), median of {rounds}: plain Playwright sequential {plain:.2f} s; "
          f"Conveyor at concurrency 1 {c1:.2f} s = {c1 / plain:.2f}x (target <= 1.05x); Conveyor at its "
          f"defaults {default:.2f} s = {default / plain:.2f}x (target <= 1.0x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--system-only", action="store_true", help="skip (a), the in-process pool figures")
    parser.add_argument("--suite-only", action="store_true", help="only (s), the acceptance suite both ways")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (s)")
    ns = parser.parse_args()
    print(f"host: {host_cores()} cores, {available_memory_mib()} MiB available; default slots: "
          f"browser {default_browser_slots()}, all kinds {default_executor_slots()}")

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-browser-"))
    if ns.rounds > 0:
        redis_proc, url = start_redis(tmp / "redis-suite")
        try:
            suite_comparison(url, tmp, ns.rounds)
        finally:
            redis_proc.stop()
    if ns.suite_only:
        return
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
