"""Redis CPU per call of the store's Lua scripts, as the gateway and the executor call
them: INFO commandstats of a redis-server of its own, per script and phase.

    .venv/bin/python -m bench.store_scripts [--jobs 2000] [--backlog 20000] [--rounds 3]
        [--compare DIR]

Per round, on an empty store and on one holding `--backlog` waiting jobs already
(in the line of the queue the submits go to), one phase per script call:
- submit:        JobStore.submit of a no-op job (the gateway's SubmitJob), no admission;
- submit+admit:  submit with admit (an idle executor: each submit hands its own job over;
                 the backlog's queue is paused meanwhile, so it is passed over);
- take:          JobStore.take(1) (the idle consumer: pops a handed-over message, claims it);
- finish:        JobStore.finish_many of one attempt with its delivery (acknowledged there);
- ack:           JobStore.ack of a delivery its finish did not acknowledge;
- claim:         JobStore.claim of a handed-over job (the actor's claim of a message not
                 claimed by a take);
- finish+take:   the busy executor draining the line (8 slots): finish_and_take of one
                 attempt with count 1 (ends it, admits the next waiting job, takes and
                 claims it): the whole executor side of one job, in one script.
Printed per phase: calls, usec_per_call of FCALL, the inner commands per call and
their own usec per call (commandstats of the commands the scripts ran), the rest (the
script's own Lua time), Redis's CPU time per call (INFO cpu: its reads and replies
too), medians of the rounds; and the fastest round's usec_per_call (on a busy machine
the least disturbed one). With --compare DIR (a copy of
conveyor/store/lua), the library built from DIR runs in the same rounds (A/B).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.peers import request
from conveyor.redis_connection import connect
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore
from conveyor.store.records import Finish, NewJob
from conveyor.store.scripts import LUA_DIR, build_library, library
from conveyor.transport import kind_queue, store_policy
from gateway.mapping import new_job
from tests.support.processes import start_redis

PREFIX = "bs"
QUEUE, BACKLOG_QUEUE = "bench", "bench"  # the backlog waits in the line the submits join
ADMIT_QUEUE = "bench-admit"
WORKER = "bench-worker"
STALL_MS = 60_000
SLOTS = 8
#: Commands of the bench itself, not of the scripts.
OWN = {"fcall", "function", "evalsha", "eval", "config", "info", "script", "flushall", "ping", "lrange", "client",
       "hello", "select"}


@dataclass
class Cost:
    calls: int
    usec_per_call: float
    inner_per_call: float
    inner_usec_per_call: float
    #: Redis's own CPU time (user + system, INFO cpu) per call: its reads and replies too.
    cpu_usec_per_call: float

    @property
    def lua_usec_per_call(self) -> float:
        return self.usec_per_call - self.inner_usec_per_call


class Stats:
    def __init__(self, sync: redis.Redis) -> None:
        self.sync = sync
        self.cpu = 0.0

    def reset(self) -> None:
        self.sync.config_resetstat()
        self.cpu = self._cpu()

    def _cpu(self) -> float:
        info: dict[str, Any] = self.sync.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def read(self) -> Cost:
        cpu = self._cpu() - self.cpu
        stats: dict[str, Any] = self.sync.info("commandstats")
        ev = stats.get("cmdstat_fcall", {"calls": 0, "usec": 0})
        calls = int(ev["calls"])
        inner = inner_usec = 0.0
        for name, row in stats.items():
            cmd = name.removeprefix("cmdstat_").split("|")[0]
            if cmd not in OWN:
                inner += float(row["calls"])
                inner_usec += float(row["usec"])
        n = max(calls, 1)
        return Cost(calls, float(ev["usec"]) / n, inner / n, inner_usec / n, cpu * 1e6 / n)


class Bench:
    def __init__(self, url: str, jobs: int, backlog: int) -> None:
        self.url, self.jobs, self.backlog = url, jobs, backlog
        self.sync = redis.Redis.from_url(url)
        self.stats = Stats(self.sync)
        settings = Settings(key_prefix=PREFIX)
        self.policy = store_policy(settings)
        self.request = request(QUEUE)
        self.admit_request = request(ADMIT_QUEUE)
        self.queues = [kind_queue("noop"), self.policy.transport_queue]

    def new_job(self, queue: str) -> NewJob:
        req = self.request if queue == QUEUE else self.admit_request
        return new_job(req, owner="default", now_ms=int(time.time() * 1000), default_max_attempts=3,
                       default_timeout_ms=60_000)

    async def round(self, lua_dir: Path | None) -> dict[str, Cost]:
        """One round of every phase on a fresh store; scripts from `lua_dir` when given."""
        self.sync.flushall()
        client = connect(self.url)
        store = JobStore(client, PREFIX, self.policy)
        lib = build_library(lua_dir) if lua_dir is not None else library()
        store._library = lib
        out: dict[str, Cost] = {}
        n = self.jobs
        try:
            await lib.load(client)
            for i in range(0, self.backlog, 100):
                await store.submit_many([self.new_job(BACKLOG_QUEUE) for _ in range(min(100, self.backlog - i))])

            self.stats.reset()
            for _ in range(n):
                await store.submit(self.new_job(QUEUE))
            out["submit"] = self.stats.read()

            # An idle executor with room for every job; the backlog's queue held back.
            await store.update_queue(QUEUE, {"paused": 1})
            await store.update_queue(ADMIT_QUEUE, {"concurrency": 1_000_000})
            await self.heartbeat(store, 2 * n)
            self.stats.reset()
            for _ in range(n):
                await store.submit(self.new_job(ADMIT_QUEUE), admit=True)
            out["submit+admit"] = self.stats.read()

            self.stats.reset()
            claims = []
            for _ in range(n // 2):
                taken = await store.take(1, WORKER, STALL_MS, self.queues)
                claims += [m.claim for m in taken.messages if m.claim is not None]
            out["take"] = self.stats.read()

            self.stats.reset()
            for c in claims:
                await store.finish_many([Finish(c.job_id, c.attempt, "completed", b"", None, c.delivery)])
            out["finish"] = self.stats.read()

            # Deliveries their finish did not acknowledge.
            claims = []
            for _ in range(n // 4):
                taken = await store.take(1, WORKER, STALL_MS, self.queues)
                claims += [m.claim for m in taken.messages if m.claim is not None]
            await store.finish_many([Finish(c.job_id, c.attempt, "completed", b"") for c in claims])
            self.stats.reset()
            for c in claims:
                assert c.delivery is not None
                await store.ack(WORKER, c.delivery.message_id, c.delivery.queue)
            out["ack"] = self.stats.read()

            # The actor's own claim of the messages still in the Dramatiq queue.
            listed: list[bytes] = self.sync.lrange(  # type: ignore[assignment]
                f"{self.policy.transport_namespace}:{self.queues[0]}", 0, -1)
            mids = [m.decode() for m in listed]
            self.stats.reset()
            claimed = []
            for mid in mids:
                job_id, attempt, _ = mid.rsplit("-", 2)
                claim = await store.claim(job_id, int(attempt), WORKER, STALL_MS)
                if not isinstance(claim, str):
                    claimed.append(claim)
            out["claim"] = self.stats.read()
            await store.finish_many([Finish(c.job_id, c.attempt, "completed", b"") for c in claimed])
            while (await store.take(64, WORKER, STALL_MS, self.queues)).popped:
                pass  # their messages, stale now: acknowledged

            # A busy executor of SLOTS slots draining the line (backlog and submits).
            await self.heartbeat(store, SLOTS)
            await store.update_queue(QUEUE, {"paused": 0, "concurrency": 1_000_000})
            await store.dispatch()
            taken = await store.take(SLOTS, WORKER, STALL_MS, self.queues)
            running = [m.claim for m in taken.messages if m.claim is not None]
            self.stats.reset()
            for _ in range(n):
                c = running.pop(0)
                _, taken = await store.finish_and_take(
                    [Finish(c.job_id, c.attempt, "completed", b"", None, c.delivery)], 1, WORKER, STALL_MS,
                    self.queues,
                )
                running += [m.claim for m in taken.messages if m.claim is not None]
                if not running:
                    break
            out["finish+take"] = self.stats.read()
        finally:
            await client.aclose()
        return out

    async def heartbeat(self, store: JobStore, slots: int) -> None:
        await store.heartbeat(WORKER, slots, 600_000, STALL_MS, {}, [], ["noop"])


def median(costs: list[Cost]) -> Cost:
    return Cost(
        int(statistics.median(c.calls for c in costs)),
        statistics.median(c.usec_per_call for c in costs),
        statistics.median(c.inner_per_call for c in costs),
        statistics.median(c.inner_usec_per_call for c in costs),
        statistics.median(c.cpu_usec_per_call for c in costs),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="a copy of conveyor/store/lua to run beside the package's")
    parser.add_argument("--url", help="a redis-server to use (flushed!) instead of one of its own")
    args = parser.parse_args()
    variants: list[tuple[str, Path | None]] = [("current", None)]
    if args.compare:
        variants.insert(0, (f"{args.compare}", args.compare))
    results: dict[tuple[str, int], dict[str, list[Cost]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = (None, args.url) if args.url else start_redis(Path(tmp))
        try:
            for _ in range(args.rounds):
                for backlog in (0, args.backlog):
                    bench = Bench(url, args.jobs, backlog)
                    for label, lua_dir in variants:
                        for phase, cost in (await bench.round(lua_dir)).items():
                            results.setdefault((label, backlog), {}).setdefault(phase, []).append(cost)
        finally:
            if proc is not None:
                proc.stop()
    print(f"scripts from {LUA_DIR}" + (f" vs {args.compare}" if args.compare else "") +
          f"; {args.jobs} jobs per phase, medians of {args.rounds} rounds")
    print(f"{'variant':<24} {'backlog':>7} {'phase':<13} {'calls':>6} {'us/call':>8} {'cmds/call':>9} "
          f"{'cmd us':>7} {'lua us':>7} {'cpu us':>7} {'min us':>7}")
    for (label, backlog), phases in results.items():
        for phase, costs in phases.items():
            c = median(costs)
            fastest = min(x.usec_per_call for x in costs)
            print(f"{label[-24:]:<24} {backlog:>7} {phase:<13} {c.calls:>6} {c.usec_per_call:>8.1f} "
                  f"{c.inner_per_call:>9.1f} {c.inner_usec_per_call:>7.1f} {c.lua_usec_per_call:>7.1f} "
                  f"{c.cpu_usec_per_call:>7.1f} {fastest:>7.1f}")


if __name__ == "__main__":
    asyncio.run(main())
