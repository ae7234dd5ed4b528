"""The counters that one finish step caches (read once per hash, written back once: see
cache_load in conveyor/store/lua/includes/base.lua) against a real Redis: a finish of
many attempts of two tenants at once -- completed, retried, failed, cancelled, with
retention deleting jobs and the freed slots taken in the same step -- leaves every
count equal to what the jobs and indexes say."""

from __future__ import annotations

import uuid
from dataclasses import replace

from conveyor.errors import ConveyorError
from conveyor.store.job_store import SUBMIT_CHUNK, JobStore
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


async def test_a_batch_of_creates_gives_what_one_create_at_a_time_gives(store: JobStore) -> None:
    """submit_many sends its jobs in calls of SUBMIT_CHUNK that read and write each
    counter hash once: over three calls, two tenants, two priorities, waiting and delayed jobs, a
    deduplication key taken twice and a quota reached within one call, every outcome
    (state, position, refusal) is what the same jobs submitted one at a time give, and
    every count is what the jobs say."""
    now_ms = await store.now_ms()

    def batch(queue: str, owners: tuple[str, str]) -> list[NewJob]:
        jobs = []
        for i in range(2 * SUBMIT_CHUNK + 7):
            # (Ids in submit order: jobs of one place in line are ordered by id.)
            owner = owners[0] if i % 3 else owners[1]
            j = replace(job(owner), queue=queue, id=f"{queue}-{i:04d}-{uuid.uuid4().hex[:8]}")
            if i % 5 == 0:
                j = replace(j, run_at_ms=now_ms + 3_600_000)  # delayed
            elif i % 7 == 3:  # ahead of the jobs of its tenant before it
                j = replace(j, priority=Priority.HIGH)
            if i in (10, 11):  # the second is refused: the first holds the key
                j = replace(j, dedup_key="once")
            if j.owner == owners[1]:  # at most 30 open jobs: its 31st and later are refused
                j = replace(j, max_open=30)
            jobs.append(j)
        return jobs

    jobs = batch(QUEUE, ("a", "b"))
    outcomes = await store.submit_many(jobs)
    one_by_one = []
    for j in batch("cache-one", ("c", "d")):
        try:
            one_by_one.append(await store.submit(j))
        except ConveyorError as exc:
            one_by_one.append(exc)  # type: ignore[arg-type]

    def seen(o: object) -> object:
        return type(o).__name__ if isinstance(o, Exception) else (o.state, o.position, o.existing)  # type: ignore[attr-defined]

    assert [seen(o) for o in outcomes] == [seen(o) for o in one_by_one]
    # The line's places, and its tenants' first places (admission's 'tenants' set), are the same.
    async def places(queue: str, index: str) -> list[float]:
        return [score for _, score in await store.client.zrange(store.keys.queue_index(queue, index), 0, -1,
                                                                 withscores=True)]

    for index in ("waiting", "tenants"):
        assert await places(QUEUE, index) == await places("cache-one", index) != []
    assert {QUEUE.encode(), b"cache-one"} <= await store.client.smembers(f"{store.prefix}:ready-queues")
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    b_jobs = [i for i, j in enumerate(jobs) if j.owner == "b" and i != 11]
    assert refused == sorted([11, *b_jobs[30:]]) and type(outcomes[11]).__name__ == "AlreadyExists"
    made = [j for i, j in enumerate(jobs) if i not in refused]
    assert all(o.id == j.id for j, o in zip(jobs, outcomes, strict=True) if not isinstance(o, Exception))

    await assert_counters_match(store, QUEUE)
    q = await counts(store, store.keys.queue(QUEUE))
    got = [j for j in await store.get_many([j.id for j in made]) if j is not None]
    assert len(got) == len(made)
    assert q.get("WAITING", 0) == sum(j.state is State.WAITING for j in got) > 0
    assert q.get("DELAYED", 0) == sum(j.state is State.DELAYED for j in got) > 0
    for owner in ("a", "b"):
        mine = [j for j in got if j.owner == owner]
        t = await counts(store, f"{store.prefix}:q:{QUEUE}:t:{owner}")
        assert t.get("WAITING", 0) + t.get("DELAYED", 0) == len(mine)
        assert (await counts(store, f"{store.prefix}:tenant:{owner}")).get("open", 0) == len(mine)
    assert sum(j.owner == "b" for j in got) == 30
    # One event per job made, numbered without gaps.
    stream = await store.client.xrange(store.keys.queue_index(QUEUE, "events"))
    assert [int(i.decode().split("-")[1]) for i, _ in stream] == list(range(1, len(made) + 1)) == list(
        range(1, q["qseq"] + 1))
    # The tenants' fair-share clocks the batch moved are kept: a job submitted after it
    # goes where it goes after the same jobs one at a time.
    for queue, owner in ((QUEUE, "a"), ("cache-one", "c")):
        await store.submit(replace(job(owner), queue=queue, id=f"{queue}-after"))
    assert await places(QUEUE, "waiting") == await places("cache-one", "waiting")
