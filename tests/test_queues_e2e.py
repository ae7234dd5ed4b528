"""Queue semantics under concurrency: two gateway processes and two executors on one
Redis, over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf import json_format

from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.store.keys import Keys
from conveyor.transport import store_policy
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import TERMINAL, error_info, submit_request, unique_queue, wait_state
from tests.support.processes import Stack, stack_env
from tests.test_store import assert_counters_match

pb, qpb = job_service_pb2, queue_service_pb2


@pytest.fixture(scope="module")
def pair(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two gateways and two executors (2 slots each) under one prefix."""
    data = tmp_path_factory.mktemp("pair")
    s = Stack(redis_url, stack_env(redis_url, data, CONVEYOR_EXECUTOR_SLOTS="2"), data / "logs")
    s.start_gateway()
    s.start_second_gateway()
    s.start_executor()
    s.start_executor()
    yield s
    s.stop()
    s.print_problems()


@pytest.fixture
async def stubs(pair: Stack) -> AsyncIterator[list[tuple[JobServiceStub, QueueServiceStub]]]:
    channels = [grpc.aio.insecure_channel(t) for t in pair.gateway_targets]
    yield [(JobServiceStub(ch), QueueServiceStub(ch)) for ch in channels]
    for ch in channels:
        await ch.close()


async def watched_sequences(queues: QueueServiceStub, queue: str, *, after: int, until: int) -> list[int]:
    """The queue sequences a WatchQueue stream from `after` sends (an event a message),
    up to and including `until`; fails after 20 s."""
    sequences: list[int] = []

    async def follow() -> None:
        async for msg in queues.WatchQueue(qpb.WatchQueueRequest(queue=queue, after_sequence=after)):
            if msg.WhichOneof("kind") == "event":
                sequences.append(msg.event.queue_sequence)
                if msg.event.queue_sequence == until:
                    return

    await asyncio.wait_for(follow(), 20)
    return sequences


async def assert_counters_match_jobs(pair: Stack, queue: str) -> None:
    """Invariant after a concurrent test: per-state counters equal the jobs in each
    state; no job is in two per-state indexes."""
    client = connect(pair.redis_url)
    try:
        policy = store_policy(Settings(key_prefix=pair.prefix))
        await assert_counters_match(JobStore(client, pair.prefix, policy), queue)
    finally:
        await client.aclose()


async def test_strict_priority_then_fifo_across_gateways_and_executors(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]], pair: Stack
) -> None:
    q = unique_queue("prio")
    (jobs_a, queues_a), (jobs_b, _) = stubs
    await queues_a.UpdateQueue(qpb.UpdateQueueRequest(queue=q, concurrency=1))
    await queues_a.PauseQueue(qpb.PauseQueueRequest(queue=q))
    plan = [
        "PRIORITY_LOW",
        "PRIORITY_CRITICAL",
        "PRIORITY_NORMAL",
        "PRIORITY_CRITICAL",
        "PRIORITY_BULK",
        "PRIORITY_HIGH",
        "PRIORITY_NORMAL",
        "PRIORITY_HIGH",
    ]
    submitted: list[tuple[str, int, int]] = []  # (id, priority, order of submission)
    for i, prio in enumerate(plan):
        stub = jobs_a if i % 2 == 0 else jobs_b  # alternate gateways
        sub = await stub.SubmitJob(submit_request({"queue": q, "priority": prio, "noop": {"sleep": "0.05s"}}))
        submitted.append((sub.id, job_pb2.Priority.Value(prio), i))
    expected = [job_id for job_id, _, _ in sorted(submitted, key=lambda s: (s[1], s[2]))]
    positions = {}
    for job_id, _, _ in submitted:
        positions[job_id] = (await jobs_b.GetJob(pb.GetJobRequest(id=job_id))).job.position
    assert [positions[j] for j in expected] == list(range(1, len(plan) + 1))

    await queues_a.ResumeQueue(qpb.ResumeQueueRequest(queue=q))
    done = [await wait_state(jobs_a, job_id, TERMINAL) for job_id, _, _ in submitted]
    started = sorted(done, key=lambda j: j.start_time.ToNanoseconds())
    assert [j.id for j in started] == expected
    await assert_counters_match_jobs(pair, q)


async def test_paused_queue_accepts_but_starts_nothing_and_running_jobs_finish(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    q = unique_queue("pause")
    (jobs, queues), (jobs_b, queues_b) = stubs
    running = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "1s"}}))
    await wait_state(jobs, running.id, {job_pb2.JOB_STATE_ACTIVE})
    paused = (await queues_b.PauseQueue(qpb.PauseQueueRequest(queue=q))).queue
    assert paused.paused
    held = [await jobs_b.SubmitJob(submit_request({"queue": q, "noop": {}})) for _ in range(3)]
    assert (await wait_state(jobs, running.id, {job_pb2.JOB_STATE_COMPLETED})).state == job_pb2.JOB_STATE_COMPLETED
    # Other queues still run while this one is paused.
    other = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "noop": {}}))
    await wait_state(jobs, other.id, {job_pb2.JOB_STATE_COMPLETED})
    for h in held:
        job = (await jobs.GetJob(pb.GetJobRequest(id=h.id))).job
        assert job.state == job_pb2.JOB_STATE_WAITING and job.position >= 1
    await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q))
    for h in held:
        await wait_state(jobs, h.id, {job_pb2.JOB_STATE_COMPLETED})


async def test_concurrent_duplicate_submits_make_one_job(stubs: list[tuple[JobServiceStub, QueueServiceStub]]) -> None:
    q = unique_queue("idem")
    body = {"queue": q, "requestId": "same-order", "noop": {}}
    calls = [stubs[i % 2][0].SubmitJob(submit_request(body)) for i in range(20)]
    results = await asyncio.gather(*calls)
    assert len({r.id for r in results}) == 1
    assert sum(not r.existing for r in results) == 1
    stats = (await stubs[0][1].GetQueue(qpb.GetQueueRequest(queue=q))).queue
    assert stats.counts.waiting + stats.counts.active + stats.counts.completed == 1


async def test_dedup_key_refuses_a_second_job_with_already_exists(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    q = unique_queue("dedup")
    first = await stubs[0][0].SubmitJob(submit_request({"queue": q, "dedupKey": "user-9", "noop": {"sleep": "2s"}}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs[1][0].SubmitJob(submit_request({"queue": q, "dedupKey": "user-9", "noop": {}}))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(err.value).metadata["existing_job_id"] == first.id
    same = await stubs[1][0].SubmitJob(
        submit_request({"queue": q, "dedupKey": "user-9", "dedupReturnExisting": True, "noop": {}})
    )
    assert same.id == first.id and same.existing


async def test_dependencies_wait_then_run_or_cancel(stubs: list[tuple[JobServiceStub, QueueServiceStub]]) -> None:
    jobs = stubs[0][0]
    q = unique_queue("deps")
    parent = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "0.5s"}}))
    doomed = await jobs.SubmitJob(submit_request({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}}))
    child = await jobs.SubmitJob(submit_request({"queue": q, "dependsOn": [parent.id], "noop": {}}))
    orphan = await jobs.SubmitJob(submit_request({"queue": q, "dependsOn": [parent.id, doomed.id], "noop": {}}))
    assert child.state == job_pb2.JOB_STATE_DELAYED
    done = await wait_state(jobs, child.id, {job_pb2.JOB_STATE_COMPLETED})
    parent_job = (await jobs.GetJob(pb.GetJobRequest(id=parent.id))).job
    assert done.start_time.ToNanoseconds() >= parent_job.end_time.ToNanoseconds()
    cancelled = await wait_state(jobs, orphan.id, {job_pb2.JOB_STATE_CANCELLED})
    assert doomed.id in cancelled.error.message and list(cancelled.depends_on) == [parent.id, doomed.id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(submit_request({"queue": q, "dependsOn": ["no-such-job"], "noop": {}}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_batch_with_allow_partial_reports_bad_ones_by_index(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    q = unique_queue("batch")
    reqs = [
        submit_request({"queue": q, "noop": {}}),
        submit_request({"queue": q, "browser": {"steps": []}}),
        submit_request({"queue": q, "noop": {}}),
    ]
    resp = await stubs[0][0].SubmitJobs(pb.SubmitJobsRequest(requests=reqs, allow_partial=True))
    assert [bool(r.id) for r in resp.results] == [True, False, True]
    (error,) = resp.errors
    assert error.index == 1 and error.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "requests[1].browser.steps" in error.error.message


async def test_retry_history_and_bulk_retry_of_the_failed_set(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    jobs, queues = stubs[0]
    q = unique_queue("dlq")
    subs = [
        await jobs.SubmitJob(submit_request({"queue": q, "maxAttempts": 2, "noop": {"failFirstAttempts": 2}}))
        for _ in range(3)
    ]
    for s in subs:
        failed = await wait_state(jobs, s.id, {job_pb2.JOB_STATE_FAILED})
        assert [(a.attempt, a.outcome) for a in failed.attempts] == [
            (1, job_pb2.JOB_STATE_FAILED),
            (2, job_pb2.JOB_STATE_FAILED),
        ]
        assert all("failing attempt" in a.error.message for a in failed.attempts)
    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=q, state=job_pb2.JOB_STATE_FAILED))
    assert {j.id for j in listed.jobs} == {s.id for s in subs}
    retried = await queues.RetryFailedJobs(qpb.RetryFailedJobsRequest(queue=q))
    assert retried.retried == 3
    for s in subs:
        job = await wait_state(jobs, s.id, {job_pb2.JOB_STATE_COMPLETED})
        assert job.attempt == 3 and len(job.attempts) == 3


async def test_watch_queue_streams_every_event_and_resumes(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    (jobs, queues), (_, queues_b) = stubs
    q = unique_queue("wq")
    seen: list[job_pb2.JobEvent] = []
    first = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))  # creates the queue
    call = queues.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=0))
    async for msg in call:
        if msg.WhichOneof("kind") == "event":
            seen.append(msg.event)
            if msg.event.job_id == first.id and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                break
    call.cancel()
    second = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    await wait_state(jobs, second.id, {job_pb2.JOB_STATE_COMPLETED})
    async for msg in queues_b.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=seen[-1].queue_sequence)):
        if msg.WhichOneof("kind") == "event":
            seen.append(msg.event)
            if msg.event.job_id == second.id and msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                break
    assert [e.queue_sequence for e in seen] == list(range(1, len(seen) + 1))
    assert {e.job_id for e in seen} == {first.id, second.id}
    queue = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue
    assert queue.last_sequence == seen[-1].queue_sequence


async def test_watch_queue_replays_a_long_backlog_whole(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    """A watcher resuming far back gets every event, though the store replays them a
    page (1,000) at a time and no live event comes after to reveal the rest."""
    (jobs, queues), _ = stubs
    q = unique_queue("backlog")
    first = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))  # creates the queue
    await wait_state(jobs, first.id, {job_pb2.JOB_STATE_COMPLETED})
    await queues.PauseQueue(qpb.PauseQueueRequest(queue=q))  # nothing more happens after the submits
    try:
        for _ in range(3):
            batch = pb.SubmitJobsRequest(requests=[submit_request({"queue": q, "noop": {}})] * 400)
            await jobs.SubmitJobs(batch)
        total = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue.last_sequence
        assert total >= 1_200
        assert await watched_sequences(queues, q, after=0, until=total) == list(range(1, total + 1))
    finally:
        await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q))


async def test_watch_queue_refuses_to_skip_events_no_longer_kept(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]], pair: Stack,
) -> None:
    """A queue keeps its newest 100,000 events. A watcher resuming before them gets
    OUT_OF_RANGE naming the oldest kept sequence, never a stream with a hole in it;
    resuming from there works. (The stream is trimmed here with XTRIM, as retention
    would trim it: 100,000 events are too many to make in a test.)"""
    (jobs, queues), _ = stubs
    q = unique_queue("trimmed")
    batch = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[submit_request({"queue": q, "noop": {}})] * 5))
    for result in batch.results:
        await wait_state(jobs, result.id, {job_pb2.JOB_STATE_COMPLETED})
    total = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue.last_sequence
    assert total == 15
    r = pair.redis()
    r.xtrim(Keys(pair.prefix).queue_events(q), minid="0-7", approximate=False)  # events 1..6 are gone

    async def watch_from(after: int) -> None:
        async for _ in queues.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=after)):
            pass

    for after in (0, 2, 5):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(watch_from(after), 10)
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        info = error_info(err.value)
        assert info.reason == "EVENTS_TRIMMED"
        assert dict(info.metadata) == {"after_sequence": str(after), "oldest_sequence": "7"}

    assert await watched_sequences(queues, q, after=6, until=total) == list(range(7, total + 1))


async def test_watch_queue_in_batches_carries_every_event_in_order(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    """With max_batch_size, a message carries the events that were ready together
    (never more than asked), and the batches add up to the same stream, in order."""
    (jobs, queues), _ = stubs
    q = unique_queue("batched")
    await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[submit_request({"queue": q, "noop": {}})] * 30))
    await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    sizes: list[int] = []
    events: list[job_pb2.JobEvent] = []

    async def follow() -> None:
        async for msg in queues.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=0, max_batch_size=8)):
            assert msg.WhichOneof("kind") in ("events", "heartbeat")
            if msg.WhichOneof("kind") == "events":
                sizes.append(len(msg.events.events))
                events.extend(msg.events.events)
                if sum(e.state == job_pb2.JOB_STATE_COMPLETED for e in events) == 31:
                    return

    await asyncio.wait_for(follow(), 30)
    assert [e.queue_sequence for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 31 * 3  # WAITING, ACTIVE, COMPLETED of each job
    assert max(sizes) == 8 and all(1 <= n <= 8 for n in sizes)
    for bad in (-1, 1001):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in queues.WatchQueue(qpb.WatchQueueRequest(queue=q, max_batch_size=bad)):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_batch_size" in (err.value.details() or "")


async def test_queue_stats_and_workers(stubs: list[tuple[JobServiceStub, QueueServiceStub]], pair: Stack) -> None:
    jobs, queues = stubs[1]
    q = unique_queue("stats")
    subs = (
        await jobs.SubmitJobs(
            pb.SubmitJobsRequest(requests=[submit_request({"queue": q, "noop": {"sleep": "0.1s"}}) for _ in range(6)])
        )
    ).results
    for s in subs:
        await wait_state(jobs, s.id, TERMINAL)
    stats = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue.stats
    assert stats.completed_last_hour == 6 and len(stats.completed_per_minute) == 60
    assert stats.run_time_p50.ToMilliseconds() >= 100
    assert stats.run_time_p99.ToMilliseconds() >= stats.run_time_p50.ToMilliseconds()
    workers = (await queues.ListWorkers(qpb.ListWorkersRequest())).workers
    assert len(workers) == 2 and all(w.slots == 2 and w.pid > 0 and w.host for w in workers)
    assert sum(w.jobs_completed for w in workers) >= 0


async def test_waiting_job_has_an_estimated_start(stubs: list[tuple[JobServiceStub, QueueServiceStub]]) -> None:
    jobs, queues = stubs[0]
    q = unique_queue("eta")
    warm = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "0.2s"}}))
    await wait_state(jobs, warm.id, {job_pb2.JOB_STATE_COMPLETED})
    await queues.PauseQueue(qpb.PauseQueueRequest(queue=q))
    waiting = [await jobs.SubmitJob(submit_request({"queue": q, "noop": {}})) for _ in range(5)]
    first = (await jobs.GetJob(pb.GetJobRequest(id=waiting[0].id))).job
    last = (await jobs.GetJob(pb.GetJobRequest(id=waiting[-1].id))).job
    assert first.HasField("estimated_start_time") and last.HasField("estimated_start_time")
    assert last.estimated_start_time.ToMilliseconds() > first.estimated_start_time.ToMilliseconds()
    await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q))


async def test_clean_queue_deletes_finished_jobs_with_their_events(
    stubs: list[tuple[JobServiceStub, QueueServiceStub]],
) -> None:
    jobs, queues = stubs[0]
    q = unique_queue("clean")
    s = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    await wait_state(jobs, s.id, {job_pb2.JOB_STATE_COMPLETED})
    req = qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED)
    json_format.Parse('"0s"', req.older_than)
    assert (await queues.CleanQueue(req)).deleted == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.GetJob(pb.GetJobRequest(id=s.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queues.CleanQueue(qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_WAITING))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
