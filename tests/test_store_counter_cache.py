"""The counters that one finish step caches (read once per hash, written back once: see
cache_load in conveyor/store/lua/includes/base.lua) against a real Redis: a finish of
many attempts of two tenants at once -- completed, retried, failed, cancelled, with
retention deleting jobs and the freed slots taken in the same step -- leaves every
count equal to what the jobs and indexes say."""

from __future__ import annotations

import uuid
from dataclasses import replace

from conveyor.store.job_store import JobStore
from conveyor.store.records import Finish, NewJob, Priority, State
from conveyor.transport import kind_queue
from tests.test_store import assert_counters_match, register

QUEUE = "cache"


def job(owner: str) -> NewJob:
    return NewJob(id=uuid.uuid4().hex, queue=QUEUE, owner=owner, priority=Priority.NORMAL, max_attempts=2,
                  timeout_ms=60_000, run_at_ms=0, spec=b"", kind="noop")


async def counts(store: JobStore, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await store.client.hgetall(key)).items() if v.lstrip(b"-").isdigit()}


async def test_a_finish_of_many_attempts_keeps_every_counter_exact(store: JobStore) -> None:
    store.policy = replace(store.policy, keep_completed=2, keep_failed=1)
    owners = ["a", "b"] * 6
    jobs = [job(o) for o in owners]
    for j in jobs:
        await store.submit(j)
    await register(store, 8)
    handed = await store.dispatch(8)
    assert len(handed) == 8
    # Their messages are taken off the transport queue (as a consumer would), and claimed.
    assert len(await store.client.lpop(f"{store.policy.transport_namespace}:{kind_queue('noop')}", 8)) == 8
    for h in handed:
        assert not isinstance(await store.claim(h.job_id, h.attempt, "ex", 60_000), str)
    outcomes = ["completed", "completed", "completed", "completed", "failed", "failed", "cancelled", "failed"]
    finishes = [Finish(h.job_id, h.attempt, o, b"x", 5_000 if i == 4 else None)
                for i, (h, o) in enumerate(zip(handed, outcomes, strict=True))]
    states, taken = await store.finish_and_take(finishes, 3, "ex-w", 60_000, [kind_queue("noop")])
    assert states == [State.COMPLETED] * 4 + [State.DELAYED, State.FAILED, State.CANCELLED, State.FAILED]
    assert len(taken.messages) == 3 and all(m.claim is not None for m in taken.messages)

    await assert_counters_match(store, QUEUE)
    ids = [m.decode() for m in await store.client.zrange(store.keys.queue_index(QUEUE, "jobs"), 0, -1)]
    kept = [j for j in await store.get_many(ids) if j is not None]
    # Retention ran inside the step: 2 completed kept of 4, 1 failed of 2.
    assert sum(j.state is State.COMPLETED for j in kept) == 2
    assert sum(j.state is State.FAILED for j in kept) == 1
    q = await counts(store, store.keys.queue(QUEUE))
    assert q["ended:COMPLETED"] == 4 and q["ended:FAILED"] == 2 and q["ended:CANCELLED"] == 1
    # Every state change is one event of the queue's stream, numbered without gaps.
    stream = await store.client.xrange(store.keys.queue_index(QUEUE, "events"))
    assert [int(i.decode().split("-")[1]) for i, _ in stream] == list(range(1, q["qseq"] + 1))
    # In flight: the queue's, each tenant's and each tenant's in the queue.
    inflight = {m.decode() for m in await store.client.zrange(f"{store.prefix}:inflight", 0, -1)}
    running = [j for j in kept if j.id in inflight]
    # The 4 jobs left waiting were all handed over (8 slots free), 3 of them taken and claimed.
    assert len(running) == 4 and q["inflight"] == 4
    assert sum(j.state is State.ACTIVE for j in running) == 3
    tenants_inflight = await counts(store, f"{store.prefix}:inflight:tenants")
    for owner in ("a", "b"):
        mine = sum(j.owner == owner for j in running)
        assert tenants_inflight.get(owner, 0) == mine and tenants_inflight.get(f"{QUEUE} {owner}", 0) == mine
        # The tenant's counts in the queue, per state.
        t = await counts(store, f"{store.prefix}:q:{QUEUE}:t:{owner}")
        for state in State:
            assert t.get(state.value, 0) == sum(j.owner == owner and j.state is state for j in kept), (owner, state)
    assert (await counts(store, f"{store.prefix}:inflight:kinds")).get("noop", 0) == 4
    for owner in ("a", "b"):  # open: waiting, delayed or running (what quotas read)
        open_jobs = sum(j.owner == owner and j.state not in (State.COMPLETED, State.FAILED, State.CANCELLED)
                        for j in kept)
        assert (await counts(store, f"{store.prefix}:tenant:{owner}")).get("open", 0) == open_jobs
    # Per-minute counts of ended jobs (the minute may have turned during the test).
    minutes = await counts(store, store.keys.queue_index(QUEUE, "throughput"))
    assert sum(v for k, v in minutes.items() if k.startswith("c:")) == 4
    assert sum(v for k, v in minutes.items() if k.startswith("f:")) == 2
    # Histograms: one wait time per claim (11), one run time per ended attempt (8).
    (hist,) = await store.queue_histograms([QUEUE])
    assert sum(v for k, v in hist.items() if k.startswith("w:") and k != "w:sum") == 11
    assert sum(v for k, v in hist.items() if k.startswith("r:") and k != "r:sum") == 8
