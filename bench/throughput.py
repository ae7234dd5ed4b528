"""No-op throughput, Conveyor against plain Dramatiq, in one run on one Redis.

    .venv/bin/python -m bench.throughput [--jobs 3000] [--processes 2] [--slots 8]

(a) plain Dramatiq: `actor.send` in a loop, drained by a `dramatiq` worker process
    with the same processes x threads; the actor bumps a Redis counter so the bench
    knows when all ran.
(b) Conveyor: the same number of `noop` jobs submitted through the gateway in
    SubmitJobs batches, run by the executor, and observed by watchers, two ways:
    - queue watchers: `--queue-watchers` WatchQueue streams, each of which sees every
      event of every job (a dashboard, a CI run following its suite), twice: with
      events in batches (`max_batch_size`, `--watch-batch`) and one per message;
    - job watchers: one WatchJob stream per job, `--watchers` at a time (each client
      following its own job).
    Also SubmitJob one by one.
Then submit -> claimed latency on an idle executor (p50/p99): the time from
sending SubmitJob to the job's ACTIVE event (Redis time, same machine).

With --metrics-cost, only this instead: the batched queue-watched run on two stacks
side by side, one with both services' Prometheus endpoints on (scraped every second,
a busier scraper than Prometheus's default 15 s) and one without, alternated
(off, on, on, off, ...), and the ratios of their means: jobs/s, and CPU per job (the
gateway, the executor's process tree and Redis, from /proc).

With --tracing-cost, only this instead, in the same way: one stack with
CONVEYOR_TRACING=on (every job's queue wait and attempt spans, a submit span per
batch, exported by OTLP/HTTP to a collector the bench runs on loopback, which decodes
and counts them) against one with it off.

Everything runs on loopback, bounded in count, and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import redis

from conveyor.processes import descendants
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client import queue_events
from tests.support.processes import Stack, free_port, spawn, stack_env, start_redis, wait_for

PLAIN_NAMESPACE = "bench-plain"


def run_plain_dramatiq(redis_url: str, jobs: int, processes: int, threads: int, log_dir: Path) -> float:
    """Jobs per second of plain Dramatiq: send in a loop, drain with a worker process."""
    os.environ.update({"BENCH_REDIS_URL": redis_url, "BENCH_NAMESPACE": PLAIN_NAMESPACE})
    env = dict(os.environ)
    from bench import plain_actor  # configures the broker from the environment

    r = redis.Redis.from_url(redis_url)
    r.delete(plain_actor.COUNTER_KEY)
    worker = spawn(
        "dramatiq",
        [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.plain_actor",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        env,
        log_dir,
    )
    try:
        # Warm up: the worker is ready once it has run one message.
        plain_actor.noop.send()
        wait_for(lambda: int(r.get(plain_actor.COUNTER_KEY) or 0) >= 1, 30, "plain dramatiq worker")
        r.delete(plain_actor.COUNTER_KEY)
        start = time.perf_counter()
        for _ in range(jobs):
            plain_actor.noop.send()
        sent = time.perf_counter()
        wait_for(lambda: int(r.get(plain_actor.COUNTER_KEY) or 0) >= jobs, 300, "plain dramatiq to drain", 0.005)
        elapsed = time.perf_counter() - start
        print(f"  plain dramatiq: actor.send x{jobs} took {sent - start:.2f}s ({jobs / (sent - start):,.0f}/s)")
        return jobs / elapsed
    finally:
        worker.stop()
        r.close()


async def observe(jobs_stub: JobServiceStub, ids: list[str], watchers: int) -> None:
    """Every job's completion seen by a WatchJob stream (`watchers` streams at a time)."""
    pending = list(ids)

    async def watcher() -> None:
        while pending:
            job_id = pending.pop()
            async for msg in jobs_stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
                kind = msg.WhichOneof("kind")
                state = msg.job.state if kind == "job" else msg.event.state if kind == "event" else 0
                if state == job_pb2.JOB_STATE_COMPLETED:
                    break
                if state in (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
                    raise RuntimeError(f"job {job_id} ended in state {state}")

    await asyncio.gather(*(watcher() for _ in range(watchers)))


async def queue_watched(stack: Stack, jobs: int, watchers: int, batch: int) -> float:
    """Jobs per second, submitted in batches until every one of `watchers` WatchQueue
    streams (`batch`: their max_batch_size) has seen every job complete."""
    req = job_service_pb2.SubmitJobRequest(queue=f"bench-queue-watched-{batch}", noop=task_pb2.NoopTask())
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub, queues = JobServiceStub(ch), QueueServiceStub(ch)
        warm = await stub.SubmitJob(req)
        after = 0
        async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=warm.id, after_sequence=0)):
            if msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                after = msg.event.queue_sequence
                break

        async def watcher() -> None:
            seen: set[str] = set()
            watch = queue_service_pb2.WatchQueueRequest(queue=req.queue, after_sequence=after, max_batch_size=batch)
            async for msg in queues.WatchQueue(watch):
                for event in queue_events(msg):
                    if event.state == job_pb2.JOB_STATE_COMPLETED:
                        seen.add(event.job_id)
                        if len(seen) == jobs:
                            return

        start = time.perf_counter()
        observers = [asyncio.create_task(watcher()) for _ in range(watchers)]
        for i in range(0, jobs, 500):
            await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * min(500, jobs - i)))
        await asyncio.gather(*observers)
        return jobs / (time.perf_counter() - start)


async def run_conveyor(stack: Stack, jobs: int, watchers: int) -> dict[str, float]:
    out: dict[str, float] = {}
    req = job_service_pb2.SubmitJobRequest(queue="bench", noop=task_pb2.NoopTask())
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        warm = await stub.SubmitJob(req)
        await observe(stub, [warm.id], 1)

        # Batch submit, observed by watchers as they complete.
        start = time.perf_counter()
        ids: list[str] = []
        observers = []
        for i in range(0, jobs, 500):
            batch = job_service_pb2.SubmitJobsRequest(requests=[req] * min(500, jobs - i))
            ids_batch = [r.id for r in (await stub.SubmitJobs(batch)).results]
            ids += ids_batch
            observers.append(asyncio.create_task(observe(stub, ids_batch, max(1, watchers * len(ids_batch) // jobs))))
        submitted = time.perf_counter()
        await asyncio.gather(*observers)
        elapsed = time.perf_counter() - start
        out["batch_submit_per_s"] = jobs / (submitted - start)
        out["e2e_per_s"] = jobs / elapsed

        # SubmitJob one by one (sequential: the plain `actor.send` loop's shape).
        n = min(jobs, 1000)
        start = time.perf_counter()
        single = [(await stub.SubmitJob(req)).id for _ in range(n)]
        out["single_submit_per_s"] = n / (time.perf_counter() - start)
        await observe(stub, single, watchers)
    return out


async def submit_to_claim_latency(stack: Stack, samples: int) -> list[float]:
    """ms from sending SubmitJob to the job's ACTIVE event, one job at a time."""
    latencies: list[float] = []
    req = job_service_pb2.SubmitJobRequest(queue="latency", noop=task_pb2.NoopTask())
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        for _ in range(samples):
            sent_ms = time.time() * 1000
            sub = await stub.SubmitJob(req)
            async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=sub.id, after_sequence=0)):
                if msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_ACTIVE:
                    latencies.append(msg.event.time.ToMilliseconds() - sent_ms)
                if msg.WhichOneof("kind") == "event" and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                    break
            await asyncio.sleep(0.02)  # let the executor go idle again
    return latencies


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far (from /proc; gone ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stack_pids(s: Stack, redis_pid: int) -> list[int]:
    pids = [redis_pid, *(g.pid for g in s.gateways)]
    for e in s.executors:
        pids += [e.pid, *descendants(e.pid)]
    return pids


def metrics_cost(url: str, tmp: Path, ns: argparse.Namespace, env: dict[str, str], redis_pid: int) -> None:
    """Jobs/s and CPU per job with the metrics endpoints off and on (see the module's doc)."""
    ports = (free_port(), free_port())
    off = Stack(url, stack_env(url, tmp / "data-off", **env), tmp / "logs")
    on = Stack(url, stack_env(url, tmp / "data-on", CONVEYOR_GATEWAY_METRICS_ADDR=str(ports[0]),
                              CONVEYOR_EXECUTOR_METRICS_ADDR=str(ports[1]), **env), tmp / "logs")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            for port in ports:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()

    scraper = threading.Thread(target=scrape, daemon=True)
    try:
        for s in (off, on):
            s.start_gateway()
            s.start_executor()
            asyncio.run(queue_watched(s, max(100, ns.jobs // 5), 1, ns.watch_batch))  # warm-up
        scraper.start()
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(ns.metrics_rounds):
            # Each its turn first: a later run sees a fuller Redis and a warmer machine.
            for name, s in (("off", off), ("on", on))[:: 1 if i % 2 == 0 else -1]:
                pids = _stack_pids(s, redis_pid)
                before = _cpu_seconds(pids)
                rates[name].append(asyncio.run(queue_watched(s, ns.jobs, 1, ns.watch_batch)))
                cpu[name].append((_cpu_seconds(pids) - before) / ns.jobs * 1000)
    finally:
        stop.set()
        off.stop()
        on.stop()
    mean_off, mean_on = statistics.mean(rates["off"]), statistics.mean(rates["on"])
    print(f"  metrics off: {', '.join(f'{r:,.0f}' for r in rates['off'])} jobs/s (mean {mean_off:,.0f})")
    print(f"  metrics on : {', '.join(f'{r:,.0f}' for r in rates['on'])} jobs/s (mean {mean_on:,.0f}), "
          f"scraped every 1 s   ratio on/off {mean_on / mean_off:.2f}x")
    cpu_off, cpu_on = statistics.mean(cpu["off"]), statistics.mean(cpu["on"])
    print(f"  CPU per job (gateway + executor tree + redis): off {', '.join(f'{c:.3f}' for c in cpu['off'])} ms, "
          f"on {', '.join(f'{c:.3f}' for c in cpu['on'])} ms   ratio on/off {cpu_on / cpu_off:.2f}x")


class _SpanCounter(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector that counts the spans it is sent."""

    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with _SpanCounter.lock:
            _SpanCounter.spans += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def tracing_cost(url: str, tmp: Path, ns: argparse.Namespace, env: dict[str, str], redis_pid: int) -> None:
    """Jobs/s and CPU per job with tracing off and on (see the module's doc)."""
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SpanCounter)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    off = Stack(url, stack_env(url, tmp / "data-off", **env), tmp / "logs")
    on = Stack(url, stack_env(url, tmp / "data-on", CONVEYOR_TRACING="on", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                              NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", **env), tmp / "logs")
    try:
        for s in (off, on):
            s.start_gateway()
            s.start_executor()
            asyncio.run(queue_watched(s, max(100, ns.jobs // 5), 1, ns.watch_batch))  # warm-up
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(ns.metrics_rounds):
            for name, s in (("off", off), ("on", on))[:: 1 if i % 2 == 0 else -1]:
                pids = _stack_pids(s, redis_pid)
                before = _cpu_seconds(pids)
                rates[name].append(asyncio.run(queue_watched(s, ns.jobs, 1, ns.watch_batch)))
                cpu[name].append((_cpu_seconds(pids) - before) / ns.jobs * 1000)
    finally:
        off.stop()
        on.stop()  # flushes its last spans
        collector.shutdown()
        collector.server_close()
    mean_off, mean_on = statistics.mean(rates["off"]), statistics.mean(rates["on"])
    print(f"  tracing off: {', '.join(f'{r:,.0f}' for r in rates['off'])} jobs/s (mean {mean_off:,.0f})")
    print(f"  tracing on : {', '.join(f'{r:,.0f}' for r in rates['on'])} jobs/s (mean {mean_on:,.0f}), "
          f"{_SpanCounter.spans:,} spans exported   ratio on/off {mean_on / mean_off:.2f}x")
    cpu_off, cpu_on = statistics.mean(cpu["off"]), statistics.mean(cpu["on"])
    print(f"  CPU per job (gateway + executor tree + redis): off {', '.join(f'{c:.3f}' for c in cpu['off'])} ms, "
          f"on {', '.join(f'{c:.3f}' for c in cpu['on'])} ms   ratio on/off {cpu_on / cpu_off:.2f}x")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8, help="threads per process (both systems)")
    parser.add_argument("--watchers", type=int, default=200, help="WatchJob streams at a time")
    parser.add_argument("--queue-watchers", type=int, default=1, help="WatchQueue streams")
    parser.add_argument("--watch-batch", type=int, default=100, help="their max_batch_size, batched")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--metrics-cost", action="store_true", help="only: metrics endpoints on vs off")
    parser.add_argument("--metrics-rounds", type=int, default=3, help="rounds of each, with --metrics-cost")
    parser.add_argument("--tracing-cost", action="store_true",
                        help="only: tracing on vs off (rounds: --metrics-rounds)")
    ns = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    redis_proc, url = start_redis(tmp / "redis")
    if ns.tracing_cost:
        print(f"no-op jobs: {ns.jobs}, {ns.processes} processes x {ns.slots} slots, tracing off vs on")
        try:
            tracing_cost(url, tmp, ns, {
                "CONVEYOR_EXECUTOR_PROCESSES": str(ns.processes), "CONVEYOR_EXECUTOR_SLOTS": str(ns.slots),
                "CONVEYOR_QUEUE_CONCURRENCY": "1000", "CONVEYOR_KEEP_COMPLETED": "1000000",
                "CONVEYOR_LOG_LEVEL": "WARNING"}, redis_proc.pid)
        finally:
            redis_proc.stop()
        return
    if ns.metrics_cost:
        print(f"no-op jobs: {ns.jobs}, {ns.processes} processes x {ns.slots} slots, metrics endpoints off vs on")
        try:
            metrics_cost(url, tmp, ns, {
                "CONVEYOR_EXECUTOR_PROCESSES": str(ns.processes), "CONVEYOR_EXECUTOR_SLOTS": str(ns.slots),
                "CONVEYOR_QUEUE_CONCURRENCY": "1000", "CONVEYOR_KEEP_COMPLETED": "1000000",
                "CONVEYOR_LOG_LEVEL": "WARNING"}, redis_proc.pid)
        finally:
            redis_proc.stop()
        return
    stack = Stack(
        url,
        stack_env(
            url,
            tmp / "data",
            CONVEYOR_EXECUTOR_PROCESSES=str(ns.processes),
            CONVEYOR_EXECUTOR_SLOTS=str(ns.slots),
            CONVEYOR_QUEUE_CONCURRENCY="1000",
            CONVEYOR_KEEP_COMPLETED="1000000",
            CONVEYOR_LOG_LEVEL="WARNING",
        ),
        tmp / "logs",
    )
    try:
        print(
            f"no-op jobs: {ns.jobs}, {ns.processes} processes x {ns.slots} slots, one redis-server, "
            f"{os.cpu_count()} cores"
        )
        # Plain Dramatiq before and after Conveyor's watched runs (the stack idle), and
        # the ratios against their mean: this machine's speed drifts within a minute.
        plain_runs = [run_plain_dramatiq(url, ns.jobs, ns.processes, ns.slots, tmp / "logs")]
        stack.start_gateway()
        stack.start_executor()
        asyncio.run(queue_watched(stack, max(100, ns.jobs // 5), 1, ns.watch_batch))  # warm-up, not reported
        batched_rate = asyncio.run(queue_watched(stack, ns.jobs, ns.queue_watchers, ns.watch_batch))
        queue_rate = asyncio.run(queue_watched(stack, ns.jobs, ns.queue_watchers, 0))
        plain_runs.append(run_plain_dramatiq(url, ns.jobs, ns.processes, ns.slots, tmp / "logs"))
        plain = statistics.mean(plain_runs)
        conv = asyncio.run(run_conveyor(stack, ns.jobs, ns.watchers))
        lat = asyncio.run(submit_to_claim_latency(stack, ns.latency_samples))
    finally:
        stack.stop()
        redis_proc.stop()
    print(
        f"  plain dramatiq        : {plain:8,.0f} jobs/s end to end "
        f"(mean of {plain_runs[0]:,.0f} before and {plain_runs[1]:,.0f} after)"
    )
    print(
        f"  conveyor, {ns.queue_watchers} queue watcher(s), batches of <= {ns.watch_batch}: "
        f"{batched_rate:8,.0f} jobs/s end to end   ratio {batched_rate / plain:.2f}x"
    )
    print(
        f"  conveyor, {ns.queue_watchers} queue watcher(s), an event a message: "
        f"{queue_rate:8,.0f} jobs/s end to end   ratio {queue_rate / plain:.2f}x"
    )
    print(
        f"  conveyor, a WatchJob per job: {conv['e2e_per_s']:8,.0f} jobs/s end to end   "
        f"ratio {conv['e2e_per_s'] / plain:.2f}x"
    )
    print(f"  SubmitJobs (batches)  : {conv['batch_submit_per_s']:8,.0f} jobs/s submitted")
    print(f"  SubmitJob one by one  : {conv['single_submit_per_s']:8,.0f} jobs/s submitted")
    print(
        f"  submit -> claimed     : p50 {statistics.median(lat):.1f} ms   p99 {pct(lat, 99):.1f} ms "
        f"({len(lat)} samples, idle executor)"
    )


if __name__ == "__main__":
    main()
