"""Many watchers on one gateway: thousands of concurrent WatchJob streams, the
gateway's Redis connections while they are open, and event delivery latency (from
the event's time in Redis to its arrival at the watcher, same machine, same clock).

    .venv/bin/python -m bench.watchers [--watchers 1000] [--jobs 500]

DESIGN.md asks for 5,000 streams per gateway process. With grpcio 1.85 here, new
server-streaming calls to a grpc.aio server stall once somewhere between ~1,400 and
~2,900 are open (the point varies from run to run; reproduced with a bare grpc.aio
Health.Watch server and no Conveyor code, from one or several client processes), so
the default is 1,000; pass a larger --watchers to see where it stalls.

The watchers run in a separate client process (grpc.aio, several channels) so their
CPU is not charged to the gateway. Loopback only; bounded; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis

from conveyor.v1 import job_pb2, job_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.processes import Stack, stack_env, start_redis, wait_for

CHANNELS = 1


async def watch_many(target: str, ids: list[str], watchers: int, ready_file: Path) -> dict[str, object]:
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    stubs = [JobServiceStub(ch) for ch in channels]
    latencies: list[float] = []
    opened = 0
    all_open = asyncio.Event()

    async def watch(i: int) -> None:
        nonlocal opened
        stub = stubs[i % CHANNELS]
        async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=ids[i % len(ids)])):
            kind = msg.WhichOneof("kind")
            if kind == "job":
                opened += 1
                if opened == watchers:
                    all_open.set()
            elif kind == "event":
                latencies.append(time.time() * 1000 - msg.event.time.ToMilliseconds())
                if msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                    return

    tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
    try:
        await asyncio.wait_for(all_open.wait(), 120)
    except TimeoutError:
        raise SystemExit(f"only {opened} of {watchers} streams opened in 120 s") from None
    await asyncio.to_thread(ready_file.write_text, "open")
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    for ch in channels:
        await ch.close()
    return {"latencies": latencies}


def client_main(target: str, ids_file: str, watchers: int, ready_file: str, out_file: str) -> None:
    ids = json.loads(Path(ids_file).read_text())
    result = asyncio.run(watch_many(target, ids, watchers, Path(ready_file)))
    Path(out_file).write_text(json.dumps(result))


def gateway_connections(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        return sum(1 for c in r.client_list() if c.get("name", "").startswith("conveyor-gateway"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.client:
        target, ids_file, watchers, ready, out = ns.client
        client_main(target, ids_file, int(watchers), ready, out)
        return

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-watch-"))
    redis_proc, url = start_redis(tmp / "redis")
    # The service's default heartbeat interval (the test stacks use 1 s).
    stack = Stack(url, stack_env(url, tmp / "data", CONVEYOR_LOG_LEVEL="WARNING", CONVEYOR_EXECUTOR_SLOTS="8",
                                 CONVEYOR_KEEP_COMPLETED="100000", CONVEYOR_WATCH_HEARTBEAT_SECONDS="10"),
                  tmp / "logs")
    try:
        stack.start_gateway()
        idle = gateway_connections(url)
        req = job_service_pb2.SubmitJobRequest(queue="watched", noop=task_pb2.NoopTask())
        req.noop.sleep.FromMilliseconds(50)

        async def submit() -> list[str]:
            async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
                stub = JobServiceStub(ch)
                resp = await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * ns.jobs))
                return [r.id for r in resp.results]

        ids = asyncio.run(submit())  # they wait: no executor yet
        (tmp / "ids.json").write_text(json.dumps(ids))
        ready, out = tmp / "ready", tmp / "out.json"
        client = subprocess.Popen([sys.executable, "-m", "bench.watchers", "--client", stack.grpc_target,
                                   str(tmp / "ids.json"), str(ns.watchers), str(ready), str(out)])
        try:
            wait_for(ready.exists, 180, f"{ns.watchers} watch streams to open", 0.1)
            during = gateway_connections(url)
            started = time.perf_counter()
            stack.start_executor()
            if client.wait(600) != 0:
                raise RuntimeError("the watcher client failed")
            elapsed = time.perf_counter() - started
        finally:
            if client.poll() is None:
                client.kill()
        lat = sorted(json.loads(out.read_text())["latencies"])
    finally:
        stack.stop()
        redis_proc.stop()
    print(f"{ns.watchers:,} WatchJob streams on {ns.jobs} jobs, one gateway process")
    print(f"  gateway redis connections: {idle} idle, {during} with every stream open")
    print(f"  events delivered: {len(lat):,} in {elapsed:.1f}s")
    print(f"  delivery latency: p50 {statistics.median(lat):.1f} ms  p99 {lat[int(0.99 * (len(lat) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
