"""Browser jobs: the acceptance suite against plain Playwright, a warm pool against
launching a browser per job, throughput with 1, 2 and 4 slots, and memory per
concurrent job (PSS, not RSS).

    .venv/bin/python -m bench.browser [--jobs 30] [--suite-only] [--rounds 2]
    .venv/bin/python -m bench.browser --phases [--rounds 1]

(p) With --phases, instead: where the time goes, per test of plain Playwright (new
    context and page, goto, the test's body, close) and per job of Conveyor at queue
    concurrency 1 and at its defaults (waiting to be claimed after the previous job's
    end, the runner's phases from its `browser_task_completed` log -- context, set-up,
    steps, recorders, close --, the navigate step, claim to end outside the runner, end
    to the client seeing it), and the CPU seconds each side's processes used (live
    process trees: a busy host's other work left out).

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
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format

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


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes and every live descendant, with what
    their ended children used (cutime, cstime): a busy host's other work left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def cpu_by_process(pids: list[int]) -> dict[str, float]:
    """tree_cpu_seconds, by kind of process (its command line's telling part)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        kind = next((k for k in ("--type=renderer", "--type=gpu", "--type=utility", "--type=zygote", "chromium",
                                 "run-driver", "gateway.main", "executor.worker", "executor.main", "redis-server")
                     if k in cmd), cmd[:40])
        out[kind] = out.get(kind, 0.0) + sum(int(f) for f in fields[11:15]) / ticks
    return out


def plain_suite_phases(app_url: str) -> dict[str, list[float]]:
    """playwright_suite.run_suite's loop with a timer per phase (seconds per test)."""
    from playwright.sync_api import sync_playwright

    phases: dict[str, list[float]] = {"context+page": [], "goto": [], "test body": [], "close": [], "total": []}
    cpu, split = tree_cpu_seconds([os.getpid()]), cpu_by_process([os.getpid()])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=playwright_suite.DEFAULT_CHROMIUM, headless=True)
        try:
            for test in playwright_suite.TESTS:
                t0 = time.perf_counter()
                context = browser.new_context()
                page = context.new_page()
                t1 = time.perf_counter()
                page.goto(app_url)
                t2 = time.perf_counter()
                test(page)
                t3 = time.perf_counter()
                context.close()
                t4 = time.perf_counter()
                for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                    phases[name].append(seconds)
            # Before the browser closes: its processes' times are lost with them.
            phases["CPU s (this process, driver, browser)"] = [tree_cpu_seconds([os.getpid()]) - cpu]
            split = {k: v - split.get(k, 0.0) for k, v in cpu_by_process([os.getpid()]).items()}
            print("  CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(split.items())))
        finally:
            browser.close()
    return phases


async def _wait_all(target: str, bodies: list[dict[str, Any]]) -> tuple[list[job_pb2.Job], list[float], float]:
    """One SubmitJobs of `bodies`; (the jobs, the wall clock time each was seen ended,
    the wall clock time of the submit)."""
    from tests.acceptance.submit import submit_request

    async with grpc.aio.insecure_channel(target) as channel:
        stub = JobServiceStub(channel)
        submitted = time.time()
        reply = await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(
            requests=[submit_request(b) for b in bodies]))
        seen: dict[str, float] = {}

        async def wait(job_id: str) -> job_pb2.Job:
            while True:
                reply: job_service_pb2.WaitJobResponse = await stub.WaitJob(job_service_pb2.WaitJobRequest(
                    id=job_id, timeout=duration_pb2.Duration(seconds=20)))
                job = reply.job
                if job.state in (job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED):
                    seen[job_id] = time.time()
                    return job

        jobs = list(await asyncio.gather(*(wait(r.id) for r in reply.results)))
    return jobs, [seen[j.id] for j in jobs], submitted


def conveyor_suite_phases(
    redis_url: str, redis_pid: int, tmp: Path, app_url: str, label: str, **env: str
) -> dict[str, list[float]]:
    """The suite through a fresh stack (INFO logs), and where each job's time went:
    from the store's timestamps, the runner's `phases_ms` log and the client's clock."""
    import json

    environment = stack_env(redis_url, tmp / label, **env)
    if "CONVEYOR_EXECUTOR_SLOTS" not in env:
        environment.pop("CONVEYOR_EXECUTOR_SLOTS")
    stack = Stack(redis_url, environment, tmp / f"logs-{label}")
    try:
        gateway = stack.start_gateway()
        executor = stack.start_executor()
        services = [gateway.pid, executor.pid, redis_pid]
        own = time.process_time()
        cpu, split = tree_cpu_seconds(services), cpu_by_process(services)
        jobs, seen, submitted = asyncio.run(_wait_all(stack.grpc_target, conveyor_suite.suite(app_url)))
        cpu, own = tree_cpu_seconds(services) - cpu, time.process_time() - own
        split = {k: v - split.get(k, 0.0) for k, v in cpu_by_process(services).items()}
        print("  CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(split.items())))
    finally:
        stack.stop()
    failed = [j.labels["test"] for j in jobs if j.state != job_pb2.JOB_STATE_COMPLETED]
    assert not failed, f"Conveyor ({label}): {failed}"
    runner: dict[str, dict[str, Any]] = {}
    for line in executor.log().splitlines():
        if '"browser_task_completed"' in line:
            entry = json.loads(line[line.index("{"):])
            runner[entry["job_id"]] = entry
    phases: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        phases.setdefault(name, []).append(seconds)

    ordered = sorted(zip(jobs, seen, strict=True), key=lambda js: js[0].start_time.ToNanoseconds())
    previous_end = submitted
    for job, seen_at in ordered:
        start, end = job.start_time.ToNanoseconds() / 1e9, job.end_time.ToNanoseconds() / 1e9
        add("wait before claim (after previous end)", start - previous_end)
        previous_end = end
        entry = runner.get(job.id, {})
        for name, ms in entry.get("phases_ms", {}).items():
            add(f"runner: {name}", ms / 1000)
        add("runner: navigate step", job.result.steps[0].duration.ToNanoseconds() / 1e9)
        add("runner: total", entry.get("seconds", 0.0))
        add("claim..end outside the runner", end - start - entry.get("seconds", 0.0))
        add("claim..end", end - start)
        add("end..client sees it", seen_at - end)
    add("suite wall (submit..last seen)", max(seen) - submitted)
    phases["CPU s (gateway, executor, browser, redis)"] = [cpu]
    phases["CPU s (this client)"] = [own]
    return phases


def print_phases(title: str, phases: dict[str, list[float]]) -> None:
    print(title)
    for name, values in phases.items():
        print(f"  {name:42} mean {statistics.mean(values) * 1000:7.0f} ms  median "
              f"{statistics.median(values) * 1000:7.0f} ms  sum {sum(values):6.2f} s")


def phase_breakdown(redis_url: str, redis_pid: int, tmp: Path, rounds: int) -> None:
    with serve_app() as app_url:
        for r in range(rounds):
            print_phases(f"plain Playwright, round {r + 1} (per test)", plain_suite_phases(app_url))
            print_phases(f"Conveyor, queue concurrency 1, round {r + 1} (per job)",
                         conveyor_suite_phases(redis_url, redis_pid, tmp, app_url, f"ph-c1-{r}",
                                               QUEUE_CONCURRENCY="1"))
            print_phases(f"Conveyor, defaults, round {r + 1} (per job)",
                         conveyor_suite_phases(redis_url, redis_pid, tmp, app_url, f"ph-default-{r}"))


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
    parser.add_argument("--phases", action="store_true",
                        help="instead: where each test's / job's time goes, `--rounds` times")
    ns = parser.parse_args()
    print(f"host: {host_cores()} cores, {available_memory_mib()} MiB available; default slots: "
          f"browser {default_browser_slots()}, all kinds {default_executor_slots()}")

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-browser-"))
    if ns.phases:
        redis_proc, url = start_redis(tmp / "redis-phases")
        try:
            phase_breakdown(url, redis_proc.pid, tmp, max(1, ns.rounds))
        finally:
            redis_proc.stop()
        return
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
