"""Where the submit -> completion latency of one job goes: redis-server, a gateway and an
executor as real processes, then jobs one at a time with idle workers (SubmitJob then
WaitJob, as bench/peers.py's conveyor_latency), each phase's p50 / p99 / mean.

    .venv/bin/python -m bench.latency_phases [--jobs 300] [--rounds 1] [--no-monitor]
        [--root DIR --root DIR2 ...]

Two runs per round on a stack of its own:

1. plain: the client's own clock (submit sent, submit answered, WaitJob answered) and
   the job record as WaitJob answers it (create_time, start_time, end_time: Redis's
   clock, which is this machine's, kept in whole milliseconds, so a phase between a
   client time and a server time is centred by half a millisecond and is good to
   about +-0.5 ms; a phase between two server times to about +-1 ms); and the
   gateway's and the executor's CPU per job over the run (their process trees, /proc).
2. monitored: the same with `redis-cli monitor` recording every command Redis runs,
   with its time in microseconds and the connection it came on (named by CLIENT
   LIST: gateway, gateway-events, executor, executor-wake...). Per job, the
   microsecond times of the scripts (submit, take, finish, get) and of the event
   reader's XREAD, and the commands each connection sent. MONITOR itself costs Redis
   a little per command: these phases are slower than the plain run's.

With several --root (source trees, e.g. `git worktree`s or `git archive` copies of two
commits), each round runs a stack from each in turn on the one redis-server, and the
end prints each tree's median over rounds: an A/B on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from bench.peers import conveyor_stack, request, stack_cpu
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor_client._common import duration
from tests.support import processes
from tests.support.processes import Stack, start_redis

WARMUP = 20
QUEUE = "latency-phases"


@dataclass
class Sample:
    sent: float  # client clock, epoch seconds
    submitted: float
    done: float
    job_id: str = ""
    create_ms: int = 0  # server clock, whole ms
    start_ms: int = 0
    end_ms: int = 0


def ms_of(ts: object) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000  # type: ignore[attr-defined]


async def run_jobs(stack: Stack, jobs: int, warmup: int = WARMUP) -> list[Sample]:
    """`jobs` jobs one at a time (after `warmup` not counted)."""
    out: list[Sample] = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = JobServiceStub(ch)
        req = request(QUEUE)
        for i in range(jobs + warmup):
            sent = time.time()
            sub = await stub.SubmitJob(req)
            submitted = time.time()
            done = await stub.WaitJob(job_service_pb2.WaitJobRequest(id=sub.id, timeout=duration(30)))
            finished = time.time()
            if done.job.state != job_pb2.JOB_STATE_COMPLETED:
                raise RuntimeError(f"job ended {done.job.state}")
            if i >= warmup:
                j = done.job
                out.append(Sample(sent, submitted, finished, sub.id, ms_of(j.create_time), ms_of(j.start_time),
                                  ms_of(j.end_time)))
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


#: A run's phases: name -> each job's figure (ms).
Phases = dict[str, list[float]]


def show(phases: Phases) -> None:
    for name, values in phases.items():
        if not values:
            print(f"  {name:<52} (none)")
        else:
            print(f"  {name:<52} p50 {pct(values, 0.5):6.2f}  p99 {pct(values, 0.99):6.2f}  "
                  f"mean {statistics.fmean(values):6.2f} ms")


def plain_phases(samples: list[Sample]) -> Phases:
    def ms(f: float) -> float:
        return f * 1000

    return {
        "whole: submit sent -> WaitJob answered": [ms(s.done - s.sent) for s in samples],
        "SubmitJob call (client)": [ms(s.submitted - s.sent) for s in samples],
        "WaitJob call (client)": [ms(s.done - s.submitted) for s in samples],
        # server ms are floored: +0.5 ms centres them.
        "submit sent -> created (gateway in, to submit.lua)": [s.create_ms + 0.5 - ms(s.sent) for s in samples],
        "created -> started (hand-over, wake, take)": [float(s.start_ms - s.create_ms) for s in samples],
        "started -> ended (run, finish)": [float(s.end_ms - s.start_ms) for s in samples],
        "ended -> WaitJob answered (event, hub, reply)": [ms(s.done) - s.end_ms - 0.5 for s in samples],
    }


# ---- MONITOR ------------------------------------------------------------------------------------

MONITOR_LINE = re.compile(r"^(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$")


@dataclass
class Command:
    t: float
    who: str  # the connection's client name (or its address), 'lua' inside a script
    name: str  # the command, or 'script:<name>' for an FCALL
    args: list[str] = field(default_factory=list)


def parse_monitor(path: Path, names: dict[str, str], functions: dict[str, str]) -> list[Command]:
    out: list[Command] = []
    for raw in path.read_text(errors="replace").splitlines():
        m = MONITOR_LINE.match(raw)
        if m is None:
            continue
        t, addr, rest = float(m.group(1)), m.group(2), m.group(3)
        try:
            parts = shlex.split(rest)
        except ValueError:
            parts = rest.split()
        if not parts:
            continue
        name = parts[0].upper()
        if name == "FCALL" and len(parts) > 1:
            name = "script:" + functions.get(parts[1], parts[1])
        who = "lua" if addr == "lua" else names.get(addr, addr)
        out.append(Command(t, who, name, parts[1:4]))
    return out


def client_names(r: redis.Redis) -> dict[str, str]:
    return {c["addr"]: c.get("name") or c["addr"] for c in r.client_list()}


def first(cmds: list[Command], after: float, *, who: str | None = None, name: str | None = None) -> float | None:
    for c in cmds:
        if c.t >= after and (who is None or c.who.startswith(who)) and (name is None or c.name == name):
            return c.t
    return None


def monitor_phases(samples: list[Sample], cmds: list[Command]) -> tuple[Phases, list[str]]:
    phases: dict[str, list[float]] = defaultdict(list)
    counts: Counter[tuple[str, str]] = Counter()
    order = [
        "client sent -> submit.lua",
        "submit.lua -> client has the submit reply",
        "submit.lua -> executor's take.lua",
        "take.lua -> finish.lua (executor runs it)",
        "finish.lua -> hub's next XREAD (read, fanned out)",
        "client's submit reply -> WaitJob's first get.lua",
        "finish.lua -> WaitJob's last get.lua",
        "last get.lua -> client has the WaitJob answer",
        "finish.lua -> client has the WaitJob answer",
    ]
    t_cmds = [c.t for c in cmds]
    for s in samples:
        lo, hi = bisect.bisect_left(t_cmds, s.sent), bisect.bisect_right(t_cmds, s.done)
        window = cmds[lo:hi]
        for c in window:
            if c.who != "lua":
                counts[(c.who, c.name)] += 1
        submit = first(window, s.sent, name="script:submit")
        take = first(window, s.sent, who="conveyor-executor", name="script:take")
        finish = first(window, s.sent, who="conveyor-executor", name="script:finish")
        if submit is None or finish is None:
            continue
        gets = [c.t for c in window if c.name == "script:get" and c.who.startswith("conveyor-gateway")]
        phases[order[0]].append((submit - s.sent) * 1000)
        phases[order[1]].append((s.submitted - submit) * 1000)
        if take is not None:
            phases[order[2]].append((take - submit) * 1000)
            phases[order[3]].append((finish - take) * 1000)
        xread = first(window, finish, who="conveyor-gateway-events", name="XREAD")
        if xread is not None:
            phases[order[4]].append((xread - finish) * 1000)
        first_get = next((g for g in gets if g >= s.submitted), None)
        if first_get is not None:
            phases[order[5]].append((first_get - s.submitted) * 1000)
        last_get = next((g for g in reversed(gets) if g >= finish), None)
        if last_get is not None:
            phases[order[6]].append((last_get - finish) * 1000)
            phases[order[7]].append((s.done - last_get) * 1000)
        phases[order[8]].append((s.done - finish) * 1000)
    out: Phases = {"whole: submit sent -> WaitJob answered": [(s.done - s.sent) * 1000 for s in samples]}
    out.update((name, phases[name]) for name in order)
    lines = [f"  Redis commands per job, by connection ({len(samples)} jobs):"]
    for (who, name), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        if n / len(samples) >= 0.01:
            lines.append(f"    {who:<28} {name:<22} {n / len(samples):5.2f}")
    return out, lines


def monitored(stack: Stack, jobs: int, tmp: Path) -> tuple[list[Sample], list[Command]]:
    port = stack.redis_url.rsplit(":", 1)[1].split("/")[0]
    out_path = tmp / "monitor.txt"
    with open(out_path, "wb") as out:
        mon = subprocess.Popen(["redis-cli", "-p", port, "monitor"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        samples = asyncio.run(run_jobs(stack, jobs, warmup=5))
        time.sleep(0.2)
    finally:
        mon.terminate()
        mon.wait(10)
    r = redis.Redis.from_url(stack.redis_url)
    names = client_names(r)
    r.close()
    return samples, parse_monitor(out_path, names, script_functions())


def script_functions() -> dict[str, str]:
    """The function name of each command the services call (from the tree they run
    from: the library's version is in it), to the command's name."""
    code = ("import json; from conveyor.store.scripts import SCRIPT_NAMES, library; "
            "print(json.dumps({library().function(n): n for n in SCRIPT_NAMES}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=processes.ROOT, capture_output=True, text=True, check=True)
    functions: dict[str, str] = json.loads(out.stdout)
    return functions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1, help="executor worker processes")
    parser.add_argument("--no-monitor", action="store_true", help="skip the MONITOR run")
    parser.add_argument("--root", type=Path, action="append", default=[],
                        help="run the gateway and executor from this source tree; given several times, an A/B: "
                        "each round runs a stack of each in turn (default: this checkout)")
    ns = parser.parse_args()
    roots = [r.resolve() for r in ns.root] or [processes.ROOT]
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-latency-phases-"))
    redis_proc, url = start_redis(tmp / "redis")
    #: Per root, per run kind: each round's phases.
    rounds: dict[Path, dict[str, list[Phases]]] = {root: defaultdict(list) for root in roots}
    try:
        for rnd in range(ns.rounds):
            for i, root in enumerate(roots):
                processes.ROOT = root  # spawn()'s working directory: its modules come first on sys.path
                print(f"round {rnd + 1}, {root}: {ns.jobs} no-op jobs one at a time, {ns.processes} executor "
                      f"process(es), {ns.slots} slots", flush=True)
                stack = conveyor_stack(url, tmp, f"stack-{rnd}-{i}", ns.processes, ns.slots)
                try:
                    stack.start_gateway()
                    stack.start_executor()
                    print(" plain (client clock; the job record's times in ms):")
                    cpu = stack_cpu(stack)
                    plain = plain_phases(asyncio.run(run_jobs(stack, ns.jobs)))
                    used = stack_cpu(stack)
                    for name in cpu:  # CPU per job, as a phase of one figure per round
                        plain[f"{name} CPU per job (µs, not ms)"] = [
                            (used[name] - cpu[name]) * 1e6 / (ns.jobs + WARMUP)]
                    show(plain)
                    rounds[root]["plain"].append(plain)
                    if not ns.no_monitor:
                        print(" monitored (redis-cli monitor, µs):")
                        watched, counts = monitor_phases(*monitored(stack, ns.jobs, tmp))
                        show(watched)
                        print("\n".join(counts))
                        rounds[root]["monitored"].append(watched)
                finally:
                    stack.stop()
    finally:
        redis_proc.stop()
    if ns.rounds > 1 or len(roots) > 1:
        print("\nmedian over rounds of each round's p50 / p99 (ms):")
        for root, runs in rounds.items():
            print(f" {root}")
            for kind, per_round in runs.items():
                print(f"  {kind}:")
                for name in per_round[0]:
                    p50 = statistics.median(pct(r[name], 0.5) for r in per_round if r[name])
                    p99 = statistics.median(pct(r[name], 0.99) for r in per_round if r[name])
                    print(f"    {name:<52} p50 {p50:6.2f}  p99 {p99:6.2f}")


if __name__ == "__main__":
    main()
