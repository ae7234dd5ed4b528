"""The store's Lua state machine against a real Redis: ordering, admission, claims,
recovery, and the counters that must always match the jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import pytest
from dramatiq.message import Message

from conveyor.errors import FailedPrecondition, NotFound
from conveyor.kinds import KindSpec
from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Priority, State, TakenMessage
from conveyor.transport import kind_queue


def new(queue: str = "default", priority: Priority = Priority.NORMAL, *, run_at_ms: int = 0,
        max_attempts: int = 3, request_id: str = "") -> NewJob:
    return NewJob(id=uuid.uuid4().hex, queue=queue, owner="t", priority=priority, max_attempts=max_attempts,
                  timeout_ms=60_000, run_at_ms=run_at_ms, spec=b"", kind="noop", request_id=request_id)


#: The Dramatiq queue the test jobs (kind "noop") are handed over on.
NOOP_QUEUE = kind_queue("noop")


async def register(store: JobStore, slots: int, executor: str = "ex") -> None:
    await store.heartbeat(executor, slots, 60_000, 60_000, {}, [], kinds=["noop"])


async def assert_counters_match(store: JobStore, queue: str) -> None:
    """Invariant: the per-state counters equal the jobs in each state, and no job sits
    in two per-state indexes."""
    ids = [m.decode() for m in await store.client.zrange(store.keys.queue_index(queue, "jobs"), 0, -1)]
    jobs = [j for j in await store.get_many(ids) if j is not None]
    q = await store.get_queue(queue)
    for state in State:
        assert getattr(q.counts, state.value.lower()) == sum(1 for j in jobs if j.state is state), state
    members: dict[str, int] = {}
    for index in ("waiting", "delayed", "active", "completed", "failed", "cancelled"):
        for m in await store.client.zrange(store.keys.queue_index(queue, index), 0, -1):
            members[m.decode()] = members.get(m.decode(), 0) + 1
    assert all(n == 1 for n in members.values())


async def test_positions_are_priority_then_fifo(store: JobStore) -> None:
    order = [Priority.NORMAL, Priority.BULK, Priority.CRITICAL, Priority.NORMAL, Priority.HIGH]
    jobs = [new(priority=p) for p in order]
    for j in jobs:
        await store.submit(j)
    got = {j.id: j.position for j in await store.get_many([j.id for j in jobs]) if j}
    # CRITICAL, HIGH, NORMAL (first), NORMAL (second), BULK
    expected = [jobs[2], jobs[4], jobs[0], jobs[3], jobs[1]]
    assert [got[j.id] for j in expected] == [1, 2, 3, 4, 5]


async def test_dispatch_hands_over_only_free_slots_in_priority_order(store: JobStore) -> None:
    jobs = [new(priority=p) for p in (Priority.LOW, Priority.CRITICAL, Priority.NORMAL)]
    for j in jobs:
        await store.submit(j)
    assert await store.dispatch(10) == []  # no executor: no slots
    await register(store, slots=2)
    handed = await store.dispatch(10)
    assert [h.job_id for h in handed] == [jobs[1].id, jobs[2].id]
    assert await store.dispatch(10) == []  # both slots taken
    assert (await store.get(jobs[0].id)).position == 1
    await assert_counters_match(store, "default")


async def test_queue_concurrency_limits_a_queue(store: JobStore) -> None:
    for _ in range(3):
        await store.submit(new(queue="narrow"))
    await register(store, slots=10)
    store.policy = replace(store.policy, default_concurrency=1)
    assert len(await store.dispatch(10)) == 1


async def test_a_delivery_claims_once(store: JobStore) -> None:
    job = new()
    await store.submit(job)
    await register(store, 1)
    (h,) = await store.dispatch(10)
    claim = await store.claim(h.job_id, h.attempt, "ex", 10_000)
    assert not isinstance(claim, str) and claim.attempt == 1
    assert await store.claim(h.job_id, h.attempt, "ex", 10_000) == "state ACTIVE"
    assert await store.complete(job.id, 1, b"r") is State.COMPLETED
    assert await store.complete(job.id, 1, b"r") is None  # a second finish changes nothing
    assert await store.claim(h.job_id, h.attempt, "ex", 10_000) == "state COMPLETED"
    await assert_counters_match(store, "default")


async def test_unclaimed_handover_goes_back_to_its_place(store: JobStore) -> None:
    first, second = new(), new()
    await store.submit(first)
    await store.submit(second)
    await register(store, 1)
    store.policy = replace(store.policy, handover_timeout_ms=50)
    (h,) = await store.dispatch(10)
    assert h.job_id == first.id
    await asyncio.sleep(0.1)
    assert await store.reap(b"lost") == (1, 0)
    assert (await store.get(first.id)).position == 1  # ahead of `second` again
    (again,) = await store.dispatch(10)
    assert again == h  # same attempt: the old message and the new one cannot both run
    await assert_counters_match(store, "default")


async def test_stalled_job_is_recovered_then_fails_when_attempts_run_out(store: JobStore) -> None:
    job = new(max_attempts=2)
    await store.submit(job)
    await register(store, 1)
    for attempt in (1, 2):
        (h,) = await store.dispatch(10)
        assert h.attempt == attempt
        claim = await store.claim(h.job_id, h.attempt, "ex", stall_timeout_ms=50)
        assert not isinstance(claim, str)
        await asyncio.sleep(0.1)  # no heartbeat: the executor "died"
        await store.reap(b"lost")
    rec = await store.get(job.id)
    assert rec.state is State.FAILED and rec.error == b"lost" and rec.attempt == 2
    await assert_counters_match(store, "default")


async def test_every_attempt_keeps_its_record_through_retries_stalls_and_a_fresh_set(store: JobStore) -> None:
    """The last attempt's record is the job's own fields; each attempt that another
    follows (a retry, a stalled run, RetryJob's fresh set) is written out first, so
    the history reads the same as if every attempt had its own fields."""
    job = new(max_attempts=3)
    await store.submit(job)
    await register(store, 1)

    async def run(worker: str, stall_ms: int = 60_000) -> int:
        (h,) = await store.dispatch(10)
        assert not isinstance(await store.claim(h.job_id, h.attempt, worker, stall_ms), str)
        return h.attempt

    assert await run("ex1") == 1
    assert await store.fail(job.id, 1, b"first", retry_in_ms=0) is State.DELAYED
    assert await store.promote_due() == 1
    assert await run("ex2", stall_ms=50) == 2
    await asyncio.sleep(0.1)  # no heartbeat past the stall deadline: the executor "died"
    assert await store.reap(b"lost") == (1, 0)
    assert await run("ex3") == 3
    running = await store.get(job.id)
    assert [(a.attempt, a.outcome, a.worker, a.end_ms) for a in running.attempts][-1] == (3, State.ACTIVE, "ex3", 0)
    fields = await store.client.hkeys(store.keys.job(job.id))
    assert not [f for f in fields if f.startswith(b"@3:")]  # the running attempt writes none
    assert await store.fail(job.id, 3, b"third") is State.FAILED
    assert (await store.retry(job.id))[0] is State.WAITING
    assert await run("ex4") == 4
    assert await store.complete(job.id, 4, b"ok") is State.COMPLETED

    rec = await store.get(job.id)
    assert [(a.attempt, a.outcome, a.worker, a.error) for a in rec.attempts] == [
        (1, State.FAILED, "ex1", b"first"), (2, State.FAILED, "ex2", b"lost"), (3, State.FAILED, "ex3", b"third"),
        (4, State.COMPLETED, "ex4", None)]
    starts = [a.start_ms for a in rec.attempts]
    assert starts == sorted(starts) and starts[0] > 0
    assert all(a.end_ms >= a.start_ms > 0 for a in rec.attempts)
    assert rec.attempts[-1].end_ms == rec.ended_ms and rec.attempts[-1].start_ms == rec.started_ms
    fields = await store.client.hkeys(store.keys.job(job.id))
    assert not [f for f in fields if f.startswith(b"@4:")]
    await assert_counters_match(store, "default")


async def test_a_job_claimed_by_an_earlier_version_ends_with_its_attempt_record_complete(store: JobStore) -> None:
    """An earlier version wrote the running attempt's '@1:' fields at its claim
    (outcome ACTIVE); ended by this one, which writes none, the attempt reads as ended."""
    job = new()
    await store.submit(job)
    await register(store, 1)
    (h,) = await store.dispatch(10)
    assert not isinstance(await store.claim(h.job_id, 1, "ex", 60_000), str)
    started = int((await store.client.hget(store.keys.job(job.id), "started")) or 0)
    await store.client.hset(store.keys.job(job.id), mapping={"@1:start": started, "@1:worker": "ex",
                                                             "@1:outcome": "ACTIVE"})
    assert await store.fail(job.id, 1, b"broke") is State.FAILED
    (a,) = (await store.get(job.id)).attempts
    assert (a.outcome, a.start_ms, a.worker, a.error) == (State.FAILED, started, "ex", b"broke") and a.end_ms >= started


async def test_heartbeat_keeps_a_running_job_and_reports_cancel(store: JobStore) -> None:
    job = new()
    await store.submit(job)
    await register(store, 1)
    (h,) = await store.dispatch(10)
    await store.claim(h.job_id, h.attempt, "ex", stall_timeout_ms=300)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await store.heartbeat("ex", 1, 60_000, 300, {}, [(job.id, 1)], kinds=["noop"]) == []
        assert await store.reap(b"lost") == (0, 0)
    assert await store.cancel(job.id, b"c") is State.ACTIVE
    assert await store.heartbeat("ex", 1, 60_000, 300, {}, [(job.id, 1)], kinds=["noop"]) == [job.id]
    assert await store.mark_cancelled(job.id, 1, b"c") is State.CANCELLED
    await assert_counters_match(store, "default")


async def test_delayed_job_is_promoted_when_due(store: JobStore) -> None:
    job = new(run_at_ms=int(time.time() * 1000) + 150)
    assert (await store.submit(job)).state is State.DELAYED
    assert await store.promote_due() == 0
    await asyncio.sleep(0.2)
    assert await store.promote_due() == 1
    rec = await store.get(job.id)
    assert rec.state is State.WAITING and rec.position == 1


async def test_request_id_is_idempotent(store: JobStore) -> None:
    a = await store.submit(new(request_id="r1"))
    b = await store.submit(new(request_id="r1"))
    assert b.id == a.id and b.existing
    q = await store.get_queue("default")
    assert q.counts.waiting == 1


async def test_a_create_sent_again_answers_with_the_job_it_made(store: JobStore) -> None:
    """What a client retrying after a lost reply does (the store client sends a script
    again on a new connection when its own died): the same job, counted once."""
    job = new()
    first = await store.submit(job)
    again = await store.submit(job)
    assert (again.id, again.existing, again.position) == (first.id, True, first.position)
    (twice,) = await store.submit_many([job])
    assert not isinstance(twice, Exception) and twice.existing
    q = await store.get_queue("default")
    assert q.counts.waiting == 1
    await assert_counters_match(store, "default")


async def test_cancel_and_retry_refuse_wrong_states(store: JobStore) -> None:
    job = new()
    await store.submit(job)
    with pytest.raises(FailedPrecondition):
        await store.retry(job.id)
    assert await store.cancel(job.id, b"c") is State.CANCELLED
    with pytest.raises(FailedPrecondition):
        await store.cancel(job.id, b"c")
    with pytest.raises(NotFound):
        await store.cancel("missing", b"c")
    assert (await store.retry(job.id))[0] is State.WAITING
    await assert_counters_match(store, "default")


async def test_concurrent_dispatchers_never_hand_a_job_over_twice(store: JobStore) -> None:
    jobs = [new() for _ in range(200)]
    await store.submit_many(jobs)
    await register(store, 1000)
    store.policy = replace(store.policy, default_concurrency=1000)
    results = await asyncio.gather(*(store.dispatch(7) for _ in range(60)))
    handed = [h.job_id for batch in results for h in batch]
    assert len(handed) == len(set(handed)) == 200
    await assert_counters_match(store, "default")


async def test_hand_over_writes_a_dramatiq_message_and_finish_refills_the_slot(store: JobStore) -> None:
    first, second = new(), new()
    await store.submit(first)
    await store.submit(second)
    await register(store, 1)
    (h,) = await store.dispatch()
    a = store.policy
    queue_key = f"{a.transport_namespace}:{NOOP_QUEUE}"  # the queue of the job's kind
    (mid,) = await store.client.lrange(queue_key, 0, -1)
    message = Message.decode(await store.client.hget(f"{queue_key}.msgs", mid))
    assert (message.actor_name, message.queue_name, message.args) == (a.actor_name, NOOP_QUEUE, (first.id, 1))
    assert message.options["redis_message_id"] == message.message_id == mid.decode()
    assert message.kwargs == {} and abs(message.message_timestamp - time.time() * 1000) < 60_000
    assert await store.client.llen(f"{queue_key}.wake") == 1  # an idle consumer is woken

    claim = await store.claim(h.job_id, h.attempt, "ex", 10_000)
    assert not isinstance(claim, str)
    await store.complete(first.id, 1, b"")
    # The slot went to the next job in the same script: its message is queued.
    ids = await store.client.lrange(queue_key, 0, -1)
    assert len(ids) == 2
    nxt = Message.decode(await store.client.hget(f"{queue_key}.msgs", ids[-1]))
    assert nxt.args == (second.id, 1)
    assert (await store.get(second.id)).handed_over


async def test_a_queue_streams_each_event_as_the_job_log_has_it_with_its_job_and_sequence(store: JobStore) -> None:
    """A stream entry is the job log's entry plus the job id and the sequence, encoded
    by the script itself for ids of every usual length and sequences past each
    msgpack integer size."""
    jobs = [replace(new(), id=job_id) for job_id in ("short", "x" * 31, "y" * 32, "z" * 200, "w" * 300)]
    await register(store, len(jobs))
    for job in jobs:
        await store.submit(job)
    for h in await store.dispatch(10):
        assert not isinstance(await store.claim(h.job_id, h.attempt, "ex", 60_000), str)
    for i in range(300):  # sequences through 127, 255 and on (uint 8 and uint 16)
        assert await store.report_progress(jobs[0].id, 1, i % 100, f"step {i}")
    for job in jobs[1:]:
        assert await store.report_progress(job.id, 1, 5, "once")
    streamed = await store.queue_events_after("default", 0, count=10_000)
    for job in jobs:
        logged = await store.events_after(job.id, 0)
        assert [e.sequence for e in logged] == list(range(1, len(logged) + 1))
        assert [e for e in streamed if e.job_id == job.id] == logged, job.id
    assert len([e for e in streamed if e.job_id == jobs[0].id]) == 302


async def test_take_claims_as_it_takes_skips_stale_deliveries_and_finish_acknowledges(
    store: JobStore,
) -> None:
    """The executor's consumer takes messages and claims their jobs in one script; a
    stale delivery is acknowledged there and never reaches an actor; finishing
    the job acknowledges its delivery, leaving none of Dramatiq's bookkeeping behind."""
    stale, fresh = new(), new()
    await store.submit(stale)
    await store.submit(fresh)
    await register(store, 2)
    assert len(await store.dispatch(10)) == 2
    # `stale`'s attempt is claimed by another delivery first (a duplicate).
    assert not isinstance(await store.claim(stale.id, 1, "other", 10_000), str)

    a = store.policy
    queue_key = f"{a.transport_namespace}:{NOOP_QUEUE}"
    acks = f"{a.transport_namespace}:__acks__.w1.{NOOP_QUEUE}"
    taken = await store.take(10, "w1", 10_000, [NOOP_QUEUE])
    assert taken.popped == 2 and len(taken.messages) == 1
    claim = taken.messages[0].claim
    assert claim is not None and claim.job_id == fresh.id and claim.attempt == 1 and claim.kind == "noop"
    assert Message.decode(taken.messages[0].data).args == (fresh.id, 1)
    job = await store.get(fresh.id)
    assert job.state is State.ACTIVE and job.attempt == 1
    # Only the taken delivery is outstanding; the stale one is acknowledged and gone.
    assert claim.delivery is not None
    assert {m.decode() for m in await store.client.smembers(acks)} == {claim.delivery.message_id}
    assert [k.decode() for k in await store.client.hkeys(f"{queue_key}.msgs")] == [claim.delivery.message_id]

    assert await store.complete(fresh.id, 1, b"", delivery=claim.delivery) is State.COMPLETED
    assert await store.client.scard(acks) == 0
    assert await store.client.hlen(f"{queue_key}.msgs") == 0
    await assert_counters_match(store, "default")


async def test_take_passes_on_messages_that_name_no_job_for_their_actor(store: JobStore) -> None:
    """A message sent with Dramatiq's own API has a uuid for its Redis id, which may
    happen to look like a hand-over's (<id>-<attempt>-<ms>), and a hand-over may
    outlive its deleted job: neither names a job, so neither is claimed or dropped
    in the script; their actor gets them as they are (and claims for itself)."""
    ns, q = store.policy.transport_namespace, store.policy.transport_queue
    ids = ["1b4e28ba-2fa1-11d2-8831-001612345678", "plainuuid4-not-shaped"]
    for mid in ids:
        message: Message[None] = Message(queue_name=q, actor_name=store.policy.actor_name, args=("j", 1), kwargs={},
                          options={"redis_message_id": mid}, message_id=mid)
        await store.client.hset(f"{ns}:{q}.msgs", mid, message.encode())
        await store.client.rpush(f"{ns}:{q}", mid)
    taken = await store.take(10, "w1", 10_000, [NOOP_QUEUE, q])
    assert taken.popped == 2
    assert [(m.message_id, m.claim, m.queue) for m in taken.messages] == [(mid, None, q) for mid in ids]
    assert Message.decode(taken.messages[0].data).args == ("j", 1)


async def test_reap_hands_a_dead_workers_outstanding_deliveries_back_to_the_queue(store: JobStore) -> None:
    """Dramatiq's own maintenance, done by reap: a worker whose Dramatiq heartbeat is
    older than the worker time-out died with its deliveries outstanding, and they go
    back to the queue; taken again, a hand-over whose job the dead worker had claimed
    is refused as stale and acknowledged (the store recovers the job by its own
    deadline). A live worker's deliveries stay where they are."""
    policy = replace(store.policy, worker_timeout_ms=300)
    quick = JobStore(store.client, store.prefix, policy)
    await quick.publish_kinds([KindSpec("noop", {})])  # reap hands back the kinds' queues it knows
    ns, q = policy.transport_namespace, NOOP_QUEUE
    jobs = [new(), new()]
    for job in jobs:
        await quick.submit(job)
    await register(quick, 2)
    assert len(await quick.dispatch(10)) == 2
    dead = await quick.take(1, "dead", 60_000, [q])
    assert len(dead.messages) == 1
    dead_claim = dead.messages[0].claim
    assert dead_claim is not None

    async def live_takes_and_reaps() -> bool:
        # The live worker beats (its take); the dead one does not.
        taken = await quick.take(1, "live", 60_000, [q])
        live_messages.extend(taken.messages)
        await quick.reap(b"lost")
        return bool(await store.client.llen(f"{ns}:{q}"))

    live_messages: list[TakenMessage] = []
    deadline = asyncio.get_running_loop().time() + 5
    while not await live_takes_and_reaps():
        assert asyncio.get_running_loop().time() < deadline, "the dead worker's delivery was never handed back"
        await asyncio.sleep(0.05)
    assert await store.client.exists(f"{ns}:__acks__.dead.{q}") == 0
    assert await store.client.zscore(f"{ns}:__heartbeats__", "dead") is None
    assert len(live_messages) == 1 and live_messages[0].claim is not None
    assert await store.client.smembers(f"{ns}:__acks__.live.{q}") == {live_messages[0].message_id.encode()}

    again = await quick.take(10, "other", 60_000, [q])
    assert again.popped == 1 and again.messages == []  # its job is ACTIVE: refused, acknowledged
    assert [k.decode() for k in await store.client.hkeys(f"{ns}:{q}.msgs")] == [live_messages[0].message_id]
    record = await store.get(dead_claim.job_id)
    assert record.state is State.ACTIVE and record.attempt == 1


async def test_ack_acknowledges_a_delivery_that_no_finish_did(store: JobStore) -> None:
    """A delivery whose actor ran nothing (a refused claim, a job no longer the
    executor's) leaves Dramatiq's bookkeeping once the consumer acknowledges it."""
    job = new()
    await store.submit(job)
    await register(store, 1)
    assert len(await store.dispatch(10)) == 1
    taken = await store.take(1, "w1", 60_000, [NOOP_QUEUE])
    (message,) = taken.messages
    ns, q = store.policy.transport_namespace, NOOP_QUEUE
    assert message.queue == q
    assert await store.client.scard(f"{ns}:__acks__.w1.{q}") == 1
    await store.ack("w1", message.message_id, q)
    assert await store.client.scard(f"{ns}:__acks__.w1.{q}") == 0
    assert await store.client.hlen(f"{ns}:{q}.msgs") == 0
    await store.ack("w1", message.message_id, q)  # twice: nothing left to do, no error


async def test_attempts_that_end_together_finish_in_one_script_each_as_if_alone(store: JobStore) -> None:
    """finish_many (what an executor sends when several of its jobs end at once): each
    attempt gets its own outcome and record, a stale one changes nothing, and the freed
    slots go to the waiting jobs in the same script."""
    from conveyor.store.records import Finish

    done, failed, retried, stale, waiting = (new(max_attempts=2) for _ in range(5))
    for job in (done, failed, retried, stale, waiting):
        await store.submit(job)
    await register(store, 4)
    assert len(await store.dispatch(10)) == 4
    for job in (done, failed, retried, stale):
        assert not isinstance(await store.claim(job.id, 1, "ex", 10_000), str)
    assert await store.complete(stale.id, 1, b"first") is State.COMPLETED

    states = await store.finish_many([
        Finish(done.id, 1, "completed", b"result"),
        Finish(failed.id, 1, "failed", b"error"),  # no retry asked: FAILED
        Finish(retried.id, 1, "failed", b"flaky", retry_in_ms=60_000),
        Finish(stale.id, 1, "completed", b"again"),
    ])
    assert states == [State.COMPLETED, State.FAILED, State.DELAYED, None]
    jobs = {j.id: j for j in await store.get_many([done.id, failed.id, retried.id, stale.id, waiting.id]) if j}
    assert jobs[done.id].result == b"result" and jobs[stale.id].result == b"first"
    assert [(a.attempt, a.outcome, a.error) for a in jobs[failed.id].attempts] == [(1, State.FAILED, b"error")]
    assert [(a.attempt, a.outcome) for a in jobs[retried.id].attempts] == [(1, State.FAILED)]
    assert jobs[done.id].attempts[0].worker == "ex" and jobs[done.id].attempts[0].end_ms > 0
    assert jobs[waiting.id].handed_over  # a freed slot went to it
    await assert_counters_match(store, "default")
