"""Where a drained job's Redis time goes, measured inside Redis: a gateway and
executors drain no-op jobs on a redis-server that runs under callgrind or with a
per-line profile of the store's Lua library. See docs/profiling.md for building that
redis-server (Redis 7.0.15 from source, with symbols; the line profile is the patch
bench/redis_profile/lua_line_profile.patch).

    .venv/bin/python -m bench.redis_profile drain URL JOBS [--processes 2]
        [--callgrind PID | --lines]
    .venv/bin/python -m bench.redis_profile submit URL JOBS [--callgrind PID | --lines]
    .venv/bin/python -m bench.redis_profile lines RAW JOBS [--top 60]

`drain` drains 200 jobs to warm up, then JOBS more (bench.peers' drain: a paused queue
filled in bulk, then resumed; 8 slots a process), and prints the rate and the cost per
job (Redis commands and CPU, gateway and executor CPU). Around the measured drain it
zeroes and dumps callgrind's counters of the redis-server `--callgrind PID` (so its
second dump file holds the drain alone), or, with `--lines`, sets the patched server's
profile back to zero before it (`CONFIG SET busy-reply-threshold 1234`, which the patch
takes as that order).

`submit` does the same around JOBS one-by-one `SubmitJob` calls into a paused queue
(bench.peers' sequential submits: a sync client, each call awaited; an executor up, as
in `peers`, so admission has capacity to look at), after 200 to warm up.

`lines` reads the patched server's profile (RAW: one line per library line, its VM
instructions and TSC cycles, written at exit to $LUAPROF) and prints, per include and
per line, the share of the cycles (less the hook's own cost, HOOK_CYCLES per VM
instruction) and the VM instructions per job: the time of a line is from its
instruction to the next one, so a line that calls redis.call or cjson carries their
cost.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import redis

from bench import peers
from conveyor.store.scripts import library

#: TSC cycles the line hook itself takes per VM instruction (the least any line took,
#: per instruction, over a drain on this machine): taken off every line's cycles.
HOOK_CYCLES = 105


def marking(callgrind_pid: str, lines: bool) -> Any:
    """bench.peers' INFO reads, marking the measured part: the first read (just before
    it) zeroes callgrind's counters or the line profile, the second (just after) dumps
    callgrind's."""
    measured = {"calls": 0}
    redis_info = peers.redis_info

    def marking_info(r: Any) -> dict[str, float]:
        first = measured["calls"] == 0
        measured["calls"] += 1
        if callgrind_pid:
            subprocess.run(["callgrind_control", "-z" if first else "-d", callgrind_pid], check=True,
                           capture_output=True)
        elif lines and first:
            r.config_set("busy-reply-threshold", 1234)
        return redis_info(r)

    return marking_info


def drain(url: str, jobs: int, processes: int, callgrind_pid: str, lines: bool) -> None:
    tmp = Path(tempfile.mkdtemp())
    stack = peers.conveyor_stack(url, tmp, "profile", processes, 8)
    redis_info = peers.redis_info
    try:
        stack.start_gateway()
        stack.start_executor()
        asyncio.run(peers.conveyor_process(stack, 200, "warm"))
        peers.redis_info = marking(callgrind_pid, lines)
        costs: list[str] = []
        rate = asyncio.run(peers.conveyor_process(stack, jobs, "measured", costs))
        print(f"{rate:.1f} jobs/s")
        print(*costs, sep="\n")
    finally:
        peers.redis_info = redis_info
        stack.stop()


def submit(url: str, jobs: int, callgrind_pid: str, lines: bool) -> None:
    tmp = Path(tempfile.mkdtemp())
    stack = peers.conveyor_stack(url, tmp, "profile", 1, 8)
    redis_info = peers.redis_info
    try:
        stack.start_gateway()
        stack.start_executor()
        peers.pause(stack, "peers-enqueue-one")
        req = peers.request("peers-enqueue-one")
        peers.sequential_rate(stack.grpc_target, peers.SUBMIT_JOB, req, 150)  # (+50 of its own warm-up)
        peers.redis_info = marking(callgrind_pid, lines)
        r = redis.Redis.from_url(url)
        info, cpu = peers.redis_info(r), peers.stack_cpu(stack)
        start = time.perf_counter()
        with grpc.insecure_channel(stack.grpc_target) as ch:
            call = ch.unary_unary(peers.SUBMIT_JOB, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=lambda b: b)
            for _ in range(jobs):
                call(req)
        took = time.perf_counter() - start
        info2, cpu2 = peers.redis_info(r), peers.stack_cpu(stack)
        r.close()
        calls, redis_us, top = peers.redis_cost(info, info2, jobs)
        gateway_us = (cpu2["gateway"] - cpu["gateway"]) * 1e6 / jobs
        print(f"{jobs / took:.1f} submits/s")
        print(f"per submit: gateway {gateway_us:.0f} µs CPU, Redis {redis_us:.0f} µs CPU over {calls:.1f} "
              f"commands ({top})")
    finally:
        peers.redis_info = redis_info
        stack.stop()


def report_lines(raw: Path, jobs: int, top: int) -> None:
    source = library().source.split("\n")
    where: dict[int, tuple[str, int]] = {}
    current, start = "?", 0
    for number, text in enumerate(source, 1):
        header = re.match(r"-- ===== (\S+) =====", text)
        if header:
            current, start = header.group(1), number
        where[number] = (current, number - start)
    rows = []
    for row in raw.read_text().split("\n"):
        if row.strip():
            line, count, cycles = map(int, row.split())
            rows.append((max(cycles - HOOK_CYCLES * count, 0), count, line))
    total = sum(r[0] for r in rows) or 1
    print(f"{sum(r[1] for r in rows) / jobs:.0f} VM instructions and {total / jobs / 1000:.1f} k cycles a job")
    by_file: dict[str, list[int]] = {}
    for cycles, count, line in rows:
        acc = by_file.setdefault(where.get(line, ("?", 0))[0], [0, 0])
        acc[0] += cycles
        acc[1] += count
    for name, (cycles, count) in sorted(by_file.items(), key=lambda kv: -kv[1][0]):
        print(f"{100 * cycles / total:5.1f} % {count / jobs:7.0f} instructions/job  {name}")
    print()
    for cycles, count, line in sorted(rows, reverse=True)[:top]:
        name, at = where.get(line, ("?", 0))
        text = source[line - 1].strip() if 0 < line <= len(source) else ""
        print(f"{100 * cycles / total:5.1f} % {count / jobs:6.1f}/job {name}:{at}: {text[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drain")
    d.add_argument("url")
    d.add_argument("jobs", type=int)
    d.add_argument("--processes", type=int, default=2)
    how = d.add_mutually_exclusive_group()
    how.add_argument("--callgrind", default="", metavar="PID")
    how.add_argument("--lines", action="store_true")
    u = sub.add_parser("submit")
    u.add_argument("url")
    u.add_argument("jobs", type=int)
    how = u.add_mutually_exclusive_group()
    how.add_argument("--callgrind", default="", metavar="PID")
    how.add_argument("--lines", action="store_true")
    r = sub.add_parser("lines")
    r.add_argument("raw", type=Path)
    r.add_argument("jobs", type=int)
    r.add_argument("--top", type=int, default=60)
    ns = parser.parse_args()
    if ns.command == "drain":
        drain(ns.url, ns.jobs, ns.processes, ns.callgrind, ns.lines)
    elif ns.command == "submit":
        submit(ns.url, ns.jobs, ns.callgrind, ns.lines)
    else:
        report_lines(ns.raw, ns.jobs, ns.top)


if __name__ == "__main__":
    main()
