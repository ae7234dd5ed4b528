"""The queue semantics of the store's Lua (issue 4), against a real Redis: dedup,
dependencies, attempt history, retention, cleaning, bulk retry, rate limits, stats."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import pytest
from dramatiq.message import Message

from conveyor.errors import AlreadyExists
from conveyor.queue_stats import HISTOGRAM_BOUNDS_MS
from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Priority, State
from conveyor.transport import kind_queue
from tests.test_store import assert_counters_match, register


def job(queue: str = "q", **kw: object) -> NewJob:
    base = NewJob(id=uuid.uuid4().hex, queue=queue, owner="t", priority=Priority.NORMAL, max_attempts=3,
                  timeout_ms=60_000, run_at_ms=0, spec=b"", kind="noop")
    return replace(base, **kw)  # type: ignore[arg-type]


async def next_delivery(store: JobStore) -> tuple[str, int]:
    """Admit, then take the next message from the Dramatiq queue as an executor would
    (a finishing job may already have handed the next one over)."""
    await store.dispatch()
    queue = f"{store.policy.transport_namespace}:{kind_queue('noop')}"
    mid = await store.client.lpop(queue)
    assert mid is not None, "nothing was handed over"
    message = Message.decode(await store.client.hget(f"{queue}.msgs", mid))
    job_id, attempt = message.args
    return str(job_id), int(attempt)


async def run_one(store: JobStore, executor: str = "ex") -> str:
    """Take the next delivery, claim it and complete it; returns the job id."""
    job_id, attempt = await next_delivery(store)
    claim = await store.claim(job_id, attempt, executor, 60_000)
    assert not isinstance(claim, str)
    await store.complete(job_id, attempt, b"ok")
    return job_id


async def test_dedup_key_refuses_or_returns_the_existing_job(store: JobStore) -> None:
    first = await store.submit(job(dedup_key="invoice-7"))
    with pytest.raises(AlreadyExists) as err:
        await store.submit(job(dedup_key="invoice-7"))
    assert err.value.metadata["existing_job_id"] == first.id
    same = await store.submit(job(dedup_key="invoice-7", dedup_return_existing=True))
    assert same.id == first.id and same.existing
    # Another queue has its own keys.
    assert not (await store.submit(job(queue="other", dedup_key="invoice-7"))).existing


async def test_dedup_key_frees_once_the_job_ended_and_its_window_passed(store: JobStore) -> None:
    await register(store, 1)
    first = await store.submit(job(dedup_key="k", dedup_window_ms=300))
    assert await run_one(store) == first.id
    with pytest.raises(AlreadyExists):  # ended, but still inside its window
        await store.submit(job(dedup_key="k"))
    await asyncio.sleep(0.35)
    again = await store.submit(job(dedup_key="k"))
    assert again.id != first.id and not again.existing


async def test_a_dependent_job_waits_then_runs_when_its_parents_complete(store: JobStore) -> None:
    await register(store, 1)
    a, b = job(), job()
    await store.submit(a)
    await store.submit(b)
    child = await store.submit(job(depends_on=(a.id, b.id)))
    assert child.state is State.DELAYED
    assert await run_one(store) == a.id
    assert (await store.get(child.id)).state is State.DELAYED  # b still pending
    assert await run_one(store) == b.id
    rec = await store.get(child.id)
    assert rec.state is State.WAITING and rec.depends_on == (a.id, b.id)
    await assert_counters_match(store, "q")


async def test_a_failed_dependency_cancels_the_chain_with_the_reason(store: JobStore) -> None:
    await register(store, 1)
    parent = job(max_attempts=1)
    await store.submit(parent)
    child = await store.submit(job(depends_on=(parent.id,)))
    grandchild = await store.submit(job(depends_on=(child.id,)))
    (h,) = await store.dispatch(1)
    await store.claim(h.job_id, h.attempt, "ex", 60_000)
    assert await store.fail(parent.id, 1, b"boom") is State.FAILED
    for dependent in (child.id, grandchild.id):
        rec = await store.get(dependent)
        assert rec.state is State.CANCELLED and rec.error is not None
    from google.rpc import status_pb2

    from conveyor.statuses import error_reason

    status = status_pb2.Status.FromString((await store.get(child.id)).error or b"")
    assert error_reason(status) == "DEPENDENCY_FAILED" and parent.id in status.message
    # Depending on a job that already failed cancels at once.
    late = await store.submit(job(depends_on=(parent.id,)))
    assert late.state is State.CANCELLED
    await assert_counters_match(store, "q")


async def test_attempts_are_recorded_with_their_errors(store: JobStore) -> None:
    await register(store, 1)
    j = job()
    await store.submit(j)
    for attempt in (1, 2):
        job_id, got = await next_delivery(store)
        assert (job_id, got) == (j.id, attempt)
        await store.claim(j.id, attempt, f"ex-{attempt}", 60_000)
        assert await store.fail(j.id, attempt, f"err {attempt}".encode(), retry_in_ms=0) is State.DELAYED
        await store.promote_due()
    await run_one(store)
    rec = await store.get(j.id)
    assert [(a.attempt, a.outcome, a.error, a.worker) for a in rec.attempts] == [
        (1, State.FAILED, b"err 1", "ex-1"), (2, State.FAILED, b"err 2", "ex-2"), (3, State.COMPLETED, None, "ex"),
    ]
    assert all(a.end_ms >= a.start_ms > 0 for a in rec.attempts)


async def test_history_keeps_the_newest_jobs_and_deletes_the_rest_entirely(store: JobStore) -> None:
    store.policy = replace(store.policy, keep_completed=3)
    await register(store, 1)
    ended: dict[str, int] = {}  # id -> end time (ms)
    for _ in range(5):
        j = job(request_id=uuid.uuid4().hex)
        await store.submit(j)
        await run_one(store)
        ended[j.id] = (await store.get(j.id)).ended_ms
    kept = [j.id for j in (await store.list_jobs(queue="q", state=State.COMPLETED))[0]]
    assert len(kept) == 3
    gone = sorted(set(ended) - set(kept))
    # The newest by end time (jobs that ended in the same millisecond are equally new).
    assert min(ended[k] for k in kept) >= max(ended[g] for g in gone)
    assert await store.get_many(gone) == [None, None]
    assert not await store.client.exists(store.keys.job_events(gone[0]))
    assert set(await store.take_deleted()) == set(gone)  # their artifacts go next
    assert (await store.get_queue("q")).counts.completed == 3
    await assert_counters_match(store, "q")


async def test_wait_and_run_histograms_count_each_time_in_its_bucket(store: JobStore) -> None:
    """Each job's wait (ready to started) and run (started to ended) time, as its record
    has them, is counted in the bucket its bounds hold, and summed; a histogram kept
    by an earlier version (a hash) is added in."""
    await register(store, 1)
    for pause in (0.0, 0.03, 0.3):
        await store.submit(job())
        job_id, attempt = await next_delivery(store)
        assert not isinstance(await store.claim(job_id, attempt, "ex", 60_000), str)
        await asyncio.sleep(pause)
        await store.complete(job_id, attempt, b"ok")
    records = (await store.list_jobs(queue="q", state=State.COMPLETED, page_size=10))[0]
    expected: dict[str, int] = {}
    for r in records:
        for letter, ms in (("w", r.started_ms - r.ready_ms), ("r", r.ended_ms - r.started_ms)):
            bucket = next((i for i, bound in enumerate(HISTOGRAM_BOUNDS_MS, 1) if ms <= bound),
                          len(HISTOGRAM_BOUNDS_MS) + 1)
            expected[f"{letter}:{bucket}"] = expected.get(f"{letter}:{bucket}", 0) + 1
            expected[f"{letter}:sum"] = expected.get(f"{letter}:sum", 0) + ms
    (hist,) = await store.queue_histograms(["q"])
    assert {k: v for k, v in hist.items() if v} == {k: v for k, v in expected.items() if v}
    stats = (await store.get_queue("q", with_stats=True)).stats
    assert stats is not None
    assert sorted(stats.wait_ms) == sorted(r.started_ms - r.ready_ms for r in records)
    assert sorted(stats.run_ms) == sorted(r.ended_ms - r.started_ms for r in records)
    assert sum(v for k, v in hist.items() if k.startswith("r:") and k != "r:sum") == 3
    await store.client.hset(store.keys.queue_index("q", "hist"), mapping={"r:1": 5, "r:sum": 7})
    (carried,) = await store.queue_histograms(["q"])
    assert carried["r:1"] == hist.get("r:1", 0) + 5 and carried["r:sum"] == hist["r:sum"] + 7


async def test_the_hand_over_is_dramatiqs_own_message_whatever_the_job_id(store: JobStore) -> None:
    """The message admission writes is one Dramatiq's Message decodes to the job's
    attempt, and the job is claimed by its id, whatever characters the id holds."""
    await register(store, 2)
    queue = f"{store.policy.transport_namespace}:{kind_queue('noop')}"
    for job_id in (uuid.uuid4().hex, 'odd"id\\with-quotes/and-é'):
        await store.submit(job(id=job_id))
        (handed,) = await store.dispatch()
        assert handed.job_id == job_id
        mid = (await store.client.lpop(queue)).decode()
        raw = await store.client.hget(f"{queue}.msgs", mid)
        data = json.loads(raw)
        message = Message.decode(raw)
        assert (message.queue_name, message.actor_name) == (kind_queue("noop"), store.policy.actor_name)
        assert (message.args, message.kwargs, message.message_id) == ((job_id, 1), {}, mid)
        assert data["options"] == {"redis_message_id": mid} and isinstance(data["message_timestamp"], int)
        assert mid.startswith(f"{job_id}-1-")
        claim = await store.claim(job_id, 1, "ex", 60_000)
        assert not isinstance(claim, str)


async def test_clean_queue_by_state_and_age_and_bulk_retry(store: JobStore) -> None:
    await register(store, 10)
    for _ in range(3):
        await store.submit(job(max_attempts=1))
    for h in await store.dispatch(10):
        await store.claim(h.job_id, h.attempt, "ex", 60_000)
        await store.fail(h.job_id, h.attempt, b"x")
    assert await store.clean_queue("q", State.FAILED, ended_before_ms=0, limit=100) == 0  # none that old
    assert await store.retry_failed("q", limit=2) == 2
    assert (await store.get_queue("q")).counts.failed == 1
    now = await store.now_ms()
    assert await store.clean_queue("q", State.FAILED, ended_before_ms=now + 1, limit=100) == 1
    q = await store.get_queue("q")
    assert (q.counts.failed, q.counts.waiting) == (0, 2)
    await assert_counters_match(store, "q")


async def test_host_rate_limit_holds_jobs_in_line_without_taking_slots(store: JobStore) -> None:
    await store.update_queue("polite", {"host_rate_limit": 1})
    await register(store, 10)
    a = job(queue="polite", hosts=("shop.example",))
    b = job(queue="polite", hosts=("shop.example",))
    c = job(queue="polite", hosts=("other.example",))
    for j in (a, b, c):
        await store.submit(j)
    handed = [h.job_id for h in await store.dispatch(10)]
    assert handed == [a.id, c.id]  # b waits for the next second; c's host is free
    b_rec = await store.get(b.id)
    assert b_rec.state is State.WAITING and b_rec.position == 1 and not b_rec.handed_over
    await asyncio.sleep(1.05)
    assert [h.job_id for h in await store.dispatch(10)] == [b.id]


async def test_paused_queue_starts_nothing_until_resumed(store: JobStore) -> None:
    await register(store, 10)
    await store.update_queue("p", {"paused": 1})
    await store.submit(job(queue="p"))
    assert await store.dispatch(10) == []
    assert (await store.get_queue("p")).paused
    await store.update_queue("p", {"paused": 0})
    assert len(await store.dispatch(10)) == 1


async def test_queue_stats_count_the_last_hour_and_time_samples(store: JobStore) -> None:
    await register(store, 1)
    for _ in range(3):
        await store.submit(job())
        await run_one(store)
    stats = (await store.get_queue("q", with_stats=True)).stats
    assert len(stats.completed_per_minute) == 60 and sum(stats.completed_per_minute) == 3
    assert stats.completed_per_minute[-1] >= 1
    assert len(stats.run_ms) == 3 and len(stats.wait_ms) == 3
