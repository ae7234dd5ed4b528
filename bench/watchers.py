"""Many watchers on one gateway: thousands of concurrent WatchJob streams, the
gateway's Redis connections per process while they are open, and event delivery
latency (from the event's time in Redis to its arrival at the watcher, same machine,
same clock).

    .venv/bin/python -m bench.watchers [--watchers 10000] [--jobs 500] [--processes 1]
                                       [--clients 4] [--channels 8] [--job-ms 50] [--slots 8]
                                       [--heartbeat SECONDS]

The watchers all start at once, in --clients client processes (grpc.aio, --channels
connections each) so their CPU is not charged to the gateway and one client process
is not the limit. With --processes N the gateway runs N serving processes on its one
port (CONVEYOR_GATEWAY_PROCESSES). Once every stream is open an executor starts and
runs the jobs (no-op, --job-ms each, --slots at once); every watcher follows its job to
completion. The event rate is set by those: each job's watchers (--watchers / --jobs)
get two events (running, completed), and the executor ends slots / job-ms jobs a
second (the defaults: 20 watchers a job, 160 jobs/s, ~6,400 events/s).

What used to stop one grpc.aio process at ~1,400-2,900 streams was not a stream limit:
grpc core keeps the calls that arrived but that the server has not yet taken (the aio
server's Python loop takes them one at a time) and, past 3,000 of them
(`grpc.server.max_pending_requests_hard_limit`), cancels the rest of a burst, which
the watchers see as CANCELLED. The gateway raises that limit (gateway/server.py
MAX_PENDING_CALLS). Any stream that fails to open is counted here by its status code.

Loopback only; bounded (120 s to open, 300 s to finish); stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis

from conveyor import event_loop
from conveyor.settings import Settings
from conveyor.v1 import job_pb2, job_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.processes import Stack, stack_env, start_redis, wait_for

OPEN_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0


async def watch_many(target: str, ids: list[str], watchers: int, channels: int, offset: int,
                     ready_file: Path) -> dict[str, object]:
    # A subchannel pool per channel: each channel is a connection of its own.
    chans = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    stubs = [JobServiceStub(ch) for ch in chans]
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    opened = 0
    settled = asyncio.Event()

    def count() -> None:
        if opened + sum(errors.values()) >= watchers:
            settled.set()

    async def watch(i: int) -> None:
        nonlocal opened
        is_open = False
        try:
            stub = stubs[i % channels]
            async for msg in stub.WatchJob(job_service_pb2.WatchJobRequest(id=ids[(offset + i) % len(ids)])):
                kind = msg.WhichOneof("kind")
                if kind == "job":
                    is_open = True
                    opened += 1
                    count()
                elif kind == "event":
                    latencies.append(time.time() * 1000 - msg.event.time.ToMilliseconds())
                    if msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                        return
        except grpc.aio.AioRpcError as err:
            errors[f"{'after' if is_open else 'opening'}: {err.code().name}"] += 1
            if not is_open:
                count()

    tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
    with_timeout = True
    try:
        await asyncio.wait_for(settled.wait(), OPEN_TIMEOUT)
    except TimeoutError:
        with_timeout = False
    await asyncio.to_thread(ready_file.write_text, json.dumps(
        {"opened": opened, "errors": dict(errors), "settled": with_timeout}))
    # The bench says on stdin whether to go on (every client's streams are open) or stop.
    before = os.times()
    if (await asyncio.to_thread(sys.stdin.readline)).strip() == "run":
        before = os.times()
        await asyncio.wait(tasks, timeout=RUN_TIMEOUT)
    after = os.times()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in chans:
        await ch.close()
    cpu = after.user + after.system - before.user - before.system
    return {"latencies": latencies, "errors": dict(errors), "cpu": cpu}


def client_main(argv: list[str]) -> None:
    target, ids_file, watchers, channels, offset, ready, out = argv
    ids = json.loads(Path(ids_file).read_text())
    # On uvloop, as the services: the clients share the machine's cores with the gateway.
    result = event_loop.run(watch_many(target, ids, int(watchers), int(channels), int(offset), Path(ready)))
    Path(out).write_text(json.dumps(result))


# --- what a gateway holds, read from Redis and from /proc ------------------------------

def gateway_pids(pid: int) -> list[int]:
    """The gateway's serving processes: its children when it supervises several, else itself."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children] or [pid]


def redis_connections_per_process(url: str) -> dict[str, dict[str, int]]:
    """Gateway connections in CLIENT LIST by serving process (`conveyor-gateway[-role].<i>`;
    "-" for a single-process gateway) and by role (pool, events, health)."""
    per: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    with redis.Redis.from_url(url) as r:
        for c in r.client_list():
            name = c.get("name", "")
            if not name.startswith("conveyor-gateway"):
                continue
            base, _sep, index = name.partition(".")
            role = base.removeprefix("conveyor-gateway").lstrip("-") or "pool"
            per[index or "-"][role] += 1
    return {k: dict(v) for k, v in sorted(per.items())}


def established_per_pid(pids: list[int], port: int, state: str = "01") -> dict[int, int]:
    """TCP sockets on local `port` held by each of `pids`, from /proc: established
    connections, or with state "0A" listening sockets."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_link.startswith("socket:["):
                    inodes[with_link[8:-1]] = pid
        except OSError:
            continue
    counts = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == state and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                counts[inodes[cols[9]]] += 1
    return counts


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far (from /proc; a pid gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--processes", type=int, default=1, help="gateway serving processes")
    parser.add_argument("--clients", type=int, default=4, help="watcher client processes")
    parser.add_argument("--channels", type=int, default=8, help="connections per client process")
    parser.add_argument("--job-ms", type=int, default=50, help="how long each (no-op) job runs")
    parser.add_argument("--slots", type=int, default=8, help="the executor's slots")
    parser.add_argument("--heartbeat", type=float, default=Settings.model_fields["watch_heartbeat_seconds"].default,
                        help="CONVEYOR_WATCH_HEARTBEAT_SECONDS (default: the service's)")
    parser.add_argument("--client", nargs=7, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.client:
        client_main(ns.client)
        return

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-watch-"))
    redis_proc, url = start_redis(tmp / "redis")
    # The service's default heartbeat interval unless asked (the test stacks use 1 s).
    stack = Stack(url, stack_env(url, tmp / "data", CONVEYOR_LOG_LEVEL="WARNING", CONVEYOR_EXECUTOR_SLOTS=str(ns.slots),
                                 CONVEYOR_KEEP_COMPLETED="100000", CONVEYOR_WATCH_HEARTBEAT_SECONDS=str(ns.heartbeat),
                                 CONVEYOR_GATEWAY_PROCESSES=str(ns.processes)),
                  tmp / "logs")
    clients: list[subprocess.Popen[bytes]] = []
    try:
        gw = stack.start_gateway()
        port = int(stack.grpc_target.rsplit(":", 1)[1])
        wait_for(lambda: sum(1 for c in redis_connections_per_process(url).values() if c.get("health"))
                 >= ns.processes, 60, "every gateway process")
        idle = redis_connections_per_process(url)
        req = job_service_pb2.SubmitJobRequest(queue="watched", noop=task_pb2.NoopTask())
        req.noop.sleep.FromMilliseconds(ns.job_ms)

        async def submit() -> list[str]:
            async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
                stub = JobServiceStub(ch)
                made: list[str] = []
                while len(made) < ns.jobs:  # SubmitJobs takes at most 1,000 a call
                    n = min(1000, ns.jobs - len(made))
                    resp = await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[req] * n))
                    made += [r.id for r in resp.results]
                return made

        ids = asyncio.run(submit())  # they wait: no executor yet
        (tmp / "ids.json").write_text(json.dumps(ids))
        share = [ns.watchers // ns.clients + (1 if c < ns.watchers % ns.clients else 0) for c in range(ns.clients)]
        for c, n in enumerate(share):
            clients.append(subprocess.Popen([
                sys.executable, "-m", "bench.watchers", "--client", stack.grpc_target, str(tmp / "ids.json"),
                str(n), str(ns.channels), str(sum(share[:c])), str(tmp / f"ready{c}"),
                str(tmp / f"out{c}.json")], stdin=subprocess.PIPE))
        started = time.perf_counter()
        wait_for(lambda: all((tmp / f"ready{c}").exists() for c in range(ns.clients)), OPEN_TIMEOUT + 30,
                 "the watcher clients", 0.1)
        open_s = time.perf_counter() - started
        ready = [json.loads((tmp / f"ready{c}").read_text()) for c in range(ns.clients)]
        opened = sum(r["opened"] for r in ready)
        open_errors: collections.Counter[str] = collections.Counter()
        for r in ready:
            open_errors.update(r["errors"])
        during = redis_connections_per_process(url)
        pids = gateway_pids(gw.pid)
        conns = established_per_pid(pids, port)
        all_open = opened == ns.watchers
        elapsed = 0.0
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(b"run\n" if all_open else b"stop\n")
            client.stdin.close()
        gw_cpu = cpu_seconds(pids)
        if all_open:
            started = time.perf_counter()
            stack.start_executor()
            for client in clients:
                if client.wait(RUN_TIMEOUT + 30) != 0:
                    raise RuntimeError("a watcher client failed")
            elapsed = time.perf_counter() - started
            gw_cpu = cpu_seconds(pids) - gw_cpu
        else:
            for client in clients:
                client.wait(60)
        lat: list[float] = []
        run_errors: collections.Counter[str] = collections.Counter()
        client_cpu = 0.0
        for c in range(ns.clients):
            out = tmp / f"out{c}.json"
            if out.exists():
                result = json.loads(out.read_text())
                lat += result["latencies"]
                client_cpu += result["cpu"]
                run_errors.update({k: v for k, v in result["errors"].items() if k.startswith("after")})
        lat.sort()
        load = Path("/proc/loadavg").read_text().split()[0]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        stack.stop()
        redis_proc.stop()
    print(f"{ns.watchers:,} WatchJob streams on {ns.jobs} jobs; gateway processes: {ns.processes}; "
          f"{ns.clients} client processes x {ns.channels} connections; load average {load} at the end")
    print(f"  streams open: {opened:,} of {ns.watchers:,} in {open_s:.1f}s"
          + (f"; failed to open: {dict(open_errors)}" if open_errors else ""))
    print(f"  client connections per gateway process (pid: connections): {conns}")
    print(f"  gateway redis connections per process (role: count): idle {idle}; with every stream open {during}")
    if lat:
        rate = f"{len(lat) / elapsed:,.0f}/s; jobs of {ns.job_ms} ms, {ns.slots} slots"
        print(f"  events delivered: {len(lat):,} in {elapsed:.1f}s ({rate})"
              + (f"; streams failed: {dict(run_errors)}" if run_errors else ""))
        print(f"  gateway CPU while delivering: {gw_cpu:.1f} s, {gw_cpu / len(lat) * 1e6:.0f} µs per event "
              f"delivered (the watcher clients: {client_cpu / len(lat) * 1e6:.0f} µs)")
        print(f"  delivery latency: p50 {statistics.median(lat):.1f} ms  p99 {lat[int(0.99 * (len(lat) - 1))]:.1f} ms"
              f"  max {lat[-1]:.1f} ms")
    if not all_open:
        sys.exit(1)


if __name__ == "__main__":
    main()
