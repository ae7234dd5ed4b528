"""A bounded, seeded mixed load on a real stack (two gateways, two executors, two
queues with concurrency limits), then the store's invariants:

(a) per queue, every state counter of the queue hash equals the size of its index
    (WAITING: the line plus the handed-over jobs), and the counters equal the jobs'
    own states;
(b) per queue, the `inflight` counter equals that queue's jobs in the global
    in-flight set, every member of that set is a job WAITING-and-handed-over or
    ACTIVE, and every ACTIVE job is in it (else nothing would ever recover it);
(c) the load drains: every job reaches a terminal state in bounded time, and while
    a queue has waiting jobs, free slots and no pause, it runs at its limit.

(a) and (b) are checked on atomic snapshots (one read-only script) during the load
as well as after it. On failure the test prints the snapshots it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2

from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.transport import store_policy
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue
from tests.support.processes import Stack
from tests.test_store import assert_counters_match

pb, qpb = job_service_pb2, queue_service_pb2

SEED = 10
CLIENTS = int(os.environ.get("MIX_CLIENTS", "30"))
LOAD_SECONDS = 20.0
DRAIN_SECONDS = 60.0
MAX_JOBS = int(os.environ.get("MIX_MAX_JOBS", "2000"))  # submissions stop there, so the drain is bounded
SLOTS = 4  # per executor; two executors
# Queue concurrency: together below the executors' 8 slots.
LIMITS = tuple(int(x) for x in os.environ.get("MIX_LIMITS", "3,3").split(","))
STARVED_SECONDS = 3.0  # waiting jobs, room and no pause for this long: a stall
CALL_TIMEOUT = 10.0

# One atomic snapshot of the queues' counters and indexes and of the in-flight set.
# ARGV: prefix, queue names.
SNAPSHOT = r"""
local P = ARGV[1]
local out = {capacity = tonumber(redis.call('GET', P .. ':capacity')) or 0, queues = {}, inflight = {}}
for i = 2, #ARGV do
  local q = ARGV[i]
  local kq = P .. ':q:' .. q
  local h = {}
  local flat = redis.call('HGETALL', kq)
  for j = 1, #flat, 2 do h[flat[j]] = flat[j + 1] end
  local idx = {}
  for _, name in ipairs({'waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled', 'jobs'}) do
    idx[name] = redis.call('ZCARD', kq .. ':' .. name)
  end
  local active_not_inflight = {}
  for _, id in ipairs(redis.call('ZRANGE', kq .. ':active', 0, -1)) do
    if not redis.call('ZSCORE', P .. ':inflight', id) then active_not_inflight[#active_not_inflight + 1] = id end
  end
  out.queues[q] = {hash = h, index = idx, active_not_inflight = active_not_inflight}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = redis.call('ZRANGE', P .. ':inflight', 0, -1, 'WITHSCORES')
for j = 1, #members, 2 do
  local id = members[j]
  local st, q, handed, attempt, cancel, worker = unpack(redis.call('HMGET', P .. ':job:' .. id,
    'state', 'queue', 'handed', 'attempt', 'cancel', 'worker'))
  local inline = false
  if q then inline = redis.call('ZSCORE', P .. ':q:' .. q .. ':waiting', id) ~= false end
  out.inflight[#out.inflight + 1] = {id = id, deadline_in_ms = tonumber(members[j + 1]) - now,
    state = st or false, queue = q or false, handed = handed or false, attempt = attempt or false,
    cancel = cancel or false, worker = worker or false, in_line = inline}
end
return cjson.encode(out)
"""

STATES = ("WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Snapshot:
    raw: dict[str, Any]
    taken_at: float

    def queue(self, q: str) -> dict[str, Any]:
        return dict(self.raw["queues"][q])

    def members(self, q: str) -> list[dict[str, Any]]:
        return [m for m in self.raw["inflight"] if m["queue"] == q]

    def real_inflight(self, q: str) -> int:
        return len(self.members(q))

    def count(self, q: str, field_name: str) -> int:
        return int(self.queue(q)["hash"].get(field_name) or 0)

    def paused(self, q: str) -> bool:
        return bool(self.queue(q)["hash"].get("paused") == "1")

    def violations(self, queues: tuple[str, ...], limits: dict[str, int]) -> list[str]:
        """What breaks invariants (a) and (b) in this snapshot."""
        out: list[str] = []
        for m in self.raw["inflight"]:
            ok = m["state"] == "ACTIVE" or (m["state"] == "WAITING" and m["handed"] == "1" and not m["in_line"])
            if not ok:
                out.append(f"in-flight member is not handed-over or ACTIVE: {m}")
        for q in queues:
            info = self.queue(q)
            idx, mine = info["index"], self.members(q)
            handed_waiting = sum(1 for m in mine if m["state"] == "WAITING" and m["handed"] == "1")
            for state in STATES:
                expected = idx[state.lower()] + (handed_waiting if state == "WAITING" else 0)
                if self.count(q, state) != expected:
                    out.append(f"{q}: counter {state}={self.count(q, state)} but its index holds {expected}"
                               + (f" (line {idx['waiting']} + handed {handed_waiting})" if state == "WAITING" else ""))
            if sum(self.count(q, s) for s in STATES) != idx["jobs"]:
                out.append(f"{q}: counters sum to {sum(self.count(q, s) for s in STATES)}, jobs index {idx['jobs']}")
            if self.count(q, "inflight") != len(mine):
                out.append(f"{q}: inflight counter {self.count(q, 'inflight')} but {len(mine)} of its jobs in flight")
            if info["active_not_inflight"]:
                out.append(f"{q}: ACTIVE jobs missing from the in-flight set: {info['active_not_inflight']}")
            if len(mine) > limits[q]:
                out.append(f"{q}: {len(mine)} in flight, above its limit {limits[q]}")
        return out

    def summary(self, queues: tuple[str, ...]) -> str:
        lines = [f"capacity={self.raw['capacity']} in-flight set={len(self.raw['inflight'])}"]
        for q in queues:
            info = self.queue(q)
            h = {k: v for k, v in info["hash"].items() if k in (*STATES, "inflight", "paused", "concurrency")}
            lines.append(f"  {q}: hash={h} index={info['index']} real_inflight={self.real_inflight(q)}"
                         f" active_not_inflight={info['active_not_inflight']}")
        for m in self.raw["inflight"]:
            lines.append(f"  inflight {m}")
        return "\n".join(lines)


async def snapshot(client: aioredis.Redis, prefix: str, queues: tuple[str, ...]) -> Snapshot:
    raw = await client.eval(SNAPSHOT, 0, prefix, *queues)
    data = json.loads(raw)
    if isinstance(data["inflight"], dict):  # cjson encodes an empty table as {}
        data["inflight"] = []
    for info in data["queues"].values():
        if isinstance(info["hash"], list):
            info["hash"] = {}
        if isinstance(info["active_not_inflight"], dict):
            info["active_not_inflight"] = []
    return Snapshot(data, time.monotonic())


@dataclass
class Load:
    stubs: list[tuple[JobServiceStub, QueueServiceStub]]
    queues: tuple[str, ...]
    deadline: float
    known: list[str] = field(default_factory=list)
    submitted: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    paused_by_test: set[str] = field(default_factory=set)

    def count(self, what: str, bucket: dict[str, int] | None = None) -> None:
        b = self.ops if bucket is None else bucket
        b[what] = b.get(what, 0) + 1


def noop_request(rng: random.Random, q: str) -> dict[str, Any]:
    fail_first = rng.choice((0, 0, 0, 0, 1, 2))
    body: dict[str, Any] = {
        "queue": q,
        "priority": rng.choice(("PRIORITY_HIGH", "PRIORITY_NORMAL", "PRIORITY_NORMAL", "PRIORITY_LOW")),
        "maxAttempts": rng.choice((1, 2, 3)),
        "noop": {"sleep": f"{rng.uniform(0.02, 0.2):.3f}s", "failFirstAttempts": fail_first},
    }
    return body


async def client_loop(i: int, load: Load) -> None:
    rng = random.Random(SEED * 1000 + i)
    jobs, queues = load.stubs[i % len(load.stubs)]
    weights = {
        "submit": 25, "batch": 12, "cancel": 8, "cancel_active": 6, "retry": 10, "pause": 2,
        "clean": 4, "retry_failed": 5, "get": 4,
    }
    names, w = list(weights), list(weights.values())
    while time.monotonic() < load.deadline:
        op = rng.choices(names, w)[0]
        q = rng.choice(load.queues)
        if op in ("submit", "batch") and load.submitted >= MAX_JOBS:
            op = rng.choice(("cancel", "retry", "get"))
        try:
            if op == "submit":
                load.submitted += 1
                sub = await jobs.SubmitJob(submit_request(noop_request(rng, q)), timeout=CALL_TIMEOUT)
                load.known.append(sub.id)
            elif op == "batch":
                n = rng.randint(5, 20)
                load.submitted += n
                reqs = [submit_request(noop_request(rng, rng.choice(load.queues))) for _ in range(n)]
                resp = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), timeout=CALL_TIMEOUT)
                load.known.extend(r.id for r in resp.results if r.id)
            elif op == "cancel" and load.known:
                await jobs.CancelJob(pb.CancelJobRequest(id=rng.choice(load.known[-200:])), timeout=CALL_TIMEOUT)
            elif op == "cancel_active":
                active = await jobs.ListJobs(
                    pb.ListJobsRequest(queue=q, state=job_pb2.JOB_STATE_ACTIVE, page_size=8), timeout=CALL_TIMEOUT)
                if active.jobs:
                    victim = rng.choice(list(active.jobs)).id
                    await jobs.CancelJob(pb.CancelJobRequest(id=victim), timeout=CALL_TIMEOUT)
            elif op == "retry" and load.known:
                await jobs.RetryJob(pb.RetryJobRequest(id=rng.choice(load.known[-300:])), timeout=CALL_TIMEOUT)
            elif op == "pause":
                load.paused_by_test.add(q)
                await queues.PauseQueue(qpb.PauseQueueRequest(queue=q), timeout=CALL_TIMEOUT)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q), timeout=CALL_TIMEOUT)
            elif op == "clean":
                state = rng.choice((job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED,
                                    job_pb2.JOB_STATE_CANCELLED))
                await queues.CleanQueue(qpb.CleanQueueRequest(
                    queue=q, state=state, older_than=duration_pb2.Duration(nanos=rng.choice((0, 200_000_000))),
                    limit=rng.randint(1, 50)), timeout=CALL_TIMEOUT)
            elif op == "retry_failed":
                await queues.RetryFailedJobs(qpb.RetryFailedJobsRequest(queue=q, limit=rng.randint(1, 20)),
                                             timeout=CALL_TIMEOUT)
            elif op == "get" and load.known:
                await jobs.GetJob(pb.GetJobRequest(id=rng.choice(load.known)), timeout=CALL_TIMEOUT)
            load.count(op)
        except grpc.aio.AioRpcError as err:
            # Refusals are expected (cancel of an ended job, retry of a waiting one, a
            # job cleaned away); anything else is counted and shown.
            load.count(f"{op}:{err.code().name}", load.errors)
        await asyncio.sleep(rng.uniform(0.01, 0.08))


def limits_of(queues: tuple[str, ...]) -> dict[str, int]:
    return dict(zip(queues, LIMITS, strict=True))


@pytest.mark.timeout(200)
async def test_mixed_load_drains_and_keeps_counters_true(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(
        CONVEYOR_EXECUTOR_SLOTS=str(SLOTS),
        CONVEYOR_KEEP_COMPLETED=os.environ.get("MIX_KEEP", "100"),  # retention deletes jobs during the load
        CONVEYOR_KEEP_FAILED=os.environ.get("MIX_KEEP", "100"),
        **{k[4:]: v for k, v in os.environ.items() if k.startswith("MIX_CONVEYOR_")},
    )
    stack.start_gateway()
    stack.start_second_gateway()
    for _ in range(int(os.environ.get("MIX_EXECUTORS", "2"))):
        stack.start_executor()
    queues = (unique_queue("mixa"), unique_queue("mixb"))
    limits = limits_of(queues)
    channels = [grpc.aio.insecure_channel(t) for t in stack.gateway_targets]
    stubs = [(JobServiceStub(ch), QueueServiceStub(ch)) for ch in channels]
    client = aioredis.Redis.from_url(stack.redis_url)
    seen: list[Snapshot] = []
    problems: list[str] = []
    started = time.monotonic()
    load = Load(stubs, queues, deadline=0.0)

    def record(snap: Snapshot, when: str) -> None:
        seen.append(snap)
        del seen[:-6]
        found = snap.violations(queues, limits)
        if found and len(problems) < 40:
            problems.extend(f"[{when} t={snap.taken_at - started:.1f}s] {v}" for v in found)
            problems.append(f"[{when}] snapshot:\n{snap.summary(queues)}")

    try:
        for q, limit in limits.items():
            await stubs[0][1].UpdateQueue(qpb.UpdateQueueRequest(queue=q, concurrency=limit))

        # ---- the load -------------------------------------------------------------
        load.deadline = time.monotonic() + LOAD_SECONDS
        clients = [asyncio.create_task(client_loop(i, load)) for i in range(CLIENTS)]
        while time.monotonic() < load.deadline:
            await asyncio.sleep(1.0)
            record(await snapshot(client, stack.prefix, queues), "load")
        await asyncio.wait_for(asyncio.gather(*clients), CALL_TIMEOUT * 3)
        for q in load.paused_by_test:  # a pause the test made must not outlive it
            await stubs[0][1].ResumeQueue(qpb.ResumeQueueRequest(queue=q))
        load_done = time.monotonic()
        print(f"load: {load_done - started:.1f}s, submitted~{load.submitted}, ops={load.ops}, refusals={load.errors}")

        # ---- the drain --------------------------------------------------------------
        starved_since: dict[str, float | None] = {q: None for q in queues}
        at_limit = {q: 0 for q in queues}
        with_waiting = {q: 0 for q in queues}
        drained = False
        while time.monotonic() - load_done < DRAIN_SECONDS:
            snap = await snapshot(client, stack.prefix, queues)
            record(snap, "drain")
            free = snap.raw["capacity"] - len(snap.raw["inflight"])
            for q in queues:
                waiting = snap.queue(q)["index"]["waiting"]
                if waiting and not snap.paused(q):
                    with_waiting[q] += 1
                    if snap.count(q, "ACTIVE") >= limits[q]:
                        at_limit[q] += 1
                starved = waiting > 0 and not snap.paused(q) and free > 0 and snap.real_inflight(q) < limits[q]
                if not starved:
                    starved_since[q] = None
                else:
                    since = starved_since[q] = starved_since[q] or snap.taken_at
                    if snap.taken_at - since >= STARVED_SECONDS:
                        problems.append(
                            f"[drain t={snap.taken_at - started:.1f}s] {q} starved for {snap.taken_at - since:.1f}s:"
                            f" {waiting} waiting, {snap.real_inflight(q)} really in flight of {limits[q]},"
                            f" {free} executor slots free, not paused\n{snap.summary(queues)}")
                        break
            if any(p.startswith("[drain") and "starved" in p for p in problems):
                break
            nonterminal = sum(snap.count(q, s) for q in queues for s in ("WAITING", "DELAYED", "ACTIVE"))
            if nonterminal == 0 and not snap.raw["inflight"]:
                drained = True
                break
            await asyncio.sleep(0.25)
        drain_s = time.monotonic() - load_done
        print(f"drain: {'done' if drained else 'NOT done'} after {drain_s:.1f}s;"
              f" samples with waiting jobs / ACTIVE at limit: "
              + ", ".join(f"{q}: {with_waiting[q]}/{at_limit[q]}" for q in queues))
        final = await snapshot(client, stack.prefix, queues)
        record(final, "final")
        if not drained:
            problems.append(f"[final] the load did not drain within {DRAIN_SECONDS:.0f}s:\n{final.summary(queues)}")
        for q in queues:
            if final.count(q, "inflight") != 0:
                problems.append(f"[final] {q}: inflight counter {final.count(q, 'inflight')} after the drain")

        # The counters against the jobs' own states (the existing form of invariant (a)).
        store_client = connect(stack.redis_url)
        try:
            store = JobStore(store_client, stack.prefix, store_policy(Settings(key_prefix=stack.prefix)))
            for q in queues:
                try:
                    await assert_counters_match(store, q)
                except AssertionError as err:
                    problems.append(f"[final] {q}: counters do not match the jobs' states: {err!r}")
        finally:
            await store_client.aclose()
        print(f"total {time.monotonic() - started:.1f}s")
    finally:
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__.startswith("client_loop"):  # type: ignore[union-attr]
                task.cancel()
        await client.aclose()
        for ch in channels:
            await ch.close()

    if problems:
        print("\n".join(problems))
        print("last snapshots:")
        for snap in seen[-3:]:
            print(snap.summary(queues))
    assert not problems, "\n".join(problems[:6])
