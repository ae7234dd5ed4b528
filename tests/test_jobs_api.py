"""JobService end to end: a real gateway and executor on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client._common import duration
from tests.support.grpc_helpers import (
    TERMINAL,
    error_info,
    field_violations,
    submit_request,
    unique_queue,
    wait_state,
    watch_all,
)
from tests.support.processes import Stack

pb = job_service_pb2


async def test_noop_job_is_watched_from_snapshot_to_completed(jobs: JobServiceStub) -> None:
    q = unique_queue()
    sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "0.2s"}}))
    assert sub.id and sub.state == job_pb2.JOB_STATE_WAITING and sub.position >= 0

    msgs = await watch_all(jobs, sub.id, after_sequence=0)
    assert msgs[0].WhichOneof("kind") == "job" and msgs[0].job.id == sub.id
    events = [m.event for m in msgs if m.WhichOneof("kind") == "event"]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state for e in events if e.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
    assert states == [job_pb2.JOB_STATE_WAITING, job_pb2.JOB_STATE_ACTIVE, job_pb2.JOB_STATE_COMPLETED]
    assert events[-1].attempt == 1

    job = (await jobs.GetJob(pb.GetJobRequest(id=sub.id))).job
    assert job.state == job_pb2.JOB_STATE_COMPLETED
    assert job.progress == 100 and job.attempt == 1 and job.max_attempts == 3
    assert job.HasField("noop") and job.noop.sleep.ToMilliseconds() == 200
    assert job.start_time.ToMilliseconds() >= job.create_time.ToMilliseconds()
    assert job.end_time.ToMilliseconds() - job.start_time.ToMilliseconds() >= 200


async def test_watch_resumes_after_a_sequence_with_nothing_missed_or_repeated(jobs: JobServiceStub) -> None:
    q = unique_queue()
    sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "0.5s"}}))
    seen: list[int] = []
    # First connection: take the snapshot and the first event, then hang up.
    call = jobs.WatchJob(pb.WatchJobRequest(id=sub.id, after_sequence=0))
    async for msg in call:
        if msg.WhichOneof("kind") == "event":
            seen.append(msg.event.sequence)
            break
    call.cancel()
    # Reconnect from the last sequence seen.
    msgs = await watch_all(jobs, sub.id, after_sequence=seen[-1])
    assert msgs[0].WhichOneof("kind") == "job"
    seen += [m.event.sequence for m in msgs if m.WhichOneof("kind") == "event"]
    assert seen == list(range(1, seen[-1] + 1))
    assert msgs[-1].event.state == job_pb2.JOB_STATE_COMPLETED


async def test_watch_of_a_finished_job_sends_snapshot_and_ends(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "noop": {}}))
    await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED})
    msgs = await watch_all(jobs, sub.id, timeout=5)
    assert len(msgs) == 1 and msgs[0].job.state == job_pb2.JOB_STATE_COMPLETED


async def test_idle_watch_gets_heartbeats(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "noop": {"sleep": "2.5s"}}))
    kinds: list[str] = []
    async for msg in jobs.WatchJob(pb.WatchJobRequest(id=sub.id)):
        kinds.append(msg.WhichOneof("kind"))
        if kinds.count("heartbeat") >= 1:
            break
    assert "heartbeat" in kinds  # the stack's heartbeat interval is 1 s; the job sleeps 2.5 s


async def test_streams_opened_together_do_not_beat_together(jobs: JobServiceStub, queues: QueueServiceStub) -> None:
    # A waiting job of a paused queue: its watchers get nothing but heartbeats.
    q = unique_queue()
    await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(queue=q))
    sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    loop = asyncio.get_running_loop()

    async def first_heartbeat_after_open() -> float:
        opened = 0.0
        async for msg in jobs.WatchJob(pb.WatchJobRequest(id=sub.id)):
            if msg.WhichOneof("kind") == "job":
                opened = loop.time()
            elif msg.WhichOneof("kind") == "heartbeat":
                return loop.time() - opened
        raise AssertionError("the stream ended")

    quiet = await asyncio.wait_for(asyncio.gather(*(first_heartbeat_after_open() for _ in range(40))), 30)
    # The stack's interval is 1 s: each beats within it (75-100 % of it, plus delivery),
    # and not all at once.
    assert all(0.7 <= gap <= 1.5 for gap in quiet), quiet
    assert max(quiet) - min(quiet) >= 0.05, quiet
    await queues.ResumeQueue(queue_service_pb2.ResumeQueueRequest(queue=q))


async def test_failed_attempts_are_retried_with_backoff_until_success(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(
        submit_request({"queue": unique_queue(), "maxAttempts": 3, "noop": {"failFirstAttempts": 2}})
    )
    msgs = await watch_all(jobs, sub.id, after_sequence=0)
    states = [
        (m.event.state, m.event.attempt)
        for m in msgs
        if m.WhichOneof("kind") == "event" and m.event.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED
    ]
    assert states == [
        (job_pb2.JOB_STATE_WAITING, 0),
        (job_pb2.JOB_STATE_ACTIVE, 1),
        (job_pb2.JOB_STATE_DELAYED, 1),
        (job_pb2.JOB_STATE_WAITING, 1),
        (job_pb2.JOB_STATE_ACTIVE, 2),
        (job_pb2.JOB_STATE_DELAYED, 2),
        (job_pb2.JOB_STATE_WAITING, 2),
        (job_pb2.JOB_STATE_ACTIVE, 3),
        (job_pb2.JOB_STATE_COMPLETED, 3),
    ]
    delayed = [m.event for m in msgs if m.WhichOneof("kind") == "event" and m.event.state == job_pb2.JOB_STATE_DELAYED]
    assert all(e.error.message and "failing attempt" in e.error.message for e in delayed)
    # Backoff doubles (base 0.2 s in the test stack, +-20% jitter): the second wait is longer.
    events = [m.event for m in msgs if m.WhichOneof("kind") == "event"]
    waits = [
        events[i + 1].time.ToMilliseconds() - events[i].time.ToMilliseconds()
        for i in range(len(events) - 1)
        if events[i].state == job_pb2.JOB_STATE_DELAYED
    ]
    assert len(waits) == 2 and 150 <= waits[0] < waits[1]


async def test_exhausted_job_fails_and_retry_job_gives_fresh_attempts(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(
        submit_request({"queue": unique_queue(), "maxAttempts": 2, "noop": {"failFirstAttempts": 3}})
    )
    job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_FAILED})
    assert job.attempt == 2 and job.max_attempts == 2
    assert job.error.code == 14 and "failing attempt 2" in job.error.message
    retried = (await jobs.RetryJob(pb.RetryJobRequest(id=sub.id))).job
    assert retried.state in (job_pb2.JOB_STATE_WAITING, job_pb2.JOB_STATE_ACTIVE) and retried.max_attempts == 4
    job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED})
    assert job.attempt == 4  # attempts keep counting: 3 fails, 4 succeeds


async def test_job_over_its_time_limit_fails_with_deadline_exceeded(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(
        submit_request({"queue": unique_queue(), "maxAttempts": 1, "timeout": "0.3s", "noop": {"sleep": "10s"}})
    )
    job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_FAILED}, timeout=10)
    assert job.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "time limit" in job.error.message


async def test_cancel_waiting_job_is_immediate_and_cancel_finished_is_refused(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "delay": "60s", "noop": {}}))
    assert sub.state == job_pb2.JOB_STATE_DELAYED
    job = (await jobs.CancelJob(pb.CancelJobRequest(id=sub.id))).job
    assert job.state == job_pb2.JOB_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CancelJob(pb.CancelJobRequest(id=sub.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).reason == "JOB_CANCELLED"


async def test_cancel_active_job_stops_it_within_two_seconds(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "noop": {"sleep": "60s"}}))
    await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_ACTIVE})
    loop = asyncio.get_running_loop()
    started = loop.time()
    job = (await jobs.CancelJob(pb.CancelJobRequest(id=sub.id))).job
    if job.state != job_pb2.JOB_STATE_CANCELLED:
        job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_CANCELLED}, timeout=2)
    assert job.state == job_pb2.JOB_STATE_CANCELLED
    assert loop.time() - started < 2.0
    assert job.error.code == grpc.StatusCode.CANCELLED.value[0]


async def test_unknown_ids_are_not_found(jobs: JobServiceStub) -> None:
    for call, req in [
        (jobs.GetJob, pb.GetJobRequest(id="nope")),
        (jobs.CancelJob, pb.CancelJobRequest(id="nope")),
        (jobs.RetryJob, pb.RetryJobRequest(id="nope")),
        (jobs.WaitJob, pb.WaitJobRequest(id="nope")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(req)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(err.value).reason == "JOB_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await watch_all(jobs, "nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"browser": {"steps": []}}, "browser.steps"),
        ({"browser": {"steps": [{"navigate": {"url": "file:///etc/passwd"}}]}}, "browser.steps[0].navigate.url"),
        ({"browser": {"steps": [{"navigate": {"url": "javascript:alert(1)"}}]}}, "browser.steps[0].navigate.url"),
        ({"browser": {"steps": [{"navigate": {"url": "chrome://settings"}}]}}, "browser.steps[0].navigate.url"),
        ({"browser": {"steps": [{"click": {"target": {"selector": ""}}}]}}, "browser.steps[0].click.target.selector"),
        ({"browser": {"steps": [{"name": "no action"}]}}, "browser.steps[0]"),
        (
            {"browser": {"steps": [{"upload": {"target": {"selector": "#f"}, "files": ["x.pdf"]}}]}},
            "browser.steps[0].upload.files[0]",
        ),
        ({"priority": 42, "noop": {}}, "priority"),
        ({"queue": "bad queue!", "noop": {}}, "queue"),
        ({"maxAttempts": -1, "noop": {}}, "max_attempts"),
        ({}, "task"),
        ({"browser": {"steps": [{"wait": {"duration": "1s"}}] * 201}}, "browser.steps"),
    ],
)
async def test_bad_requests_name_the_field(jobs: JobServiceStub, body: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(json_format.ParseDict(body, pb.SubmitJobRequest()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err.value), field_violations(err.value)
    assert error_info(err.value).reason == "FIELD_INVALID"


async def test_oversized_files_are_refused_naming_the_field(jobs: JobServiceStub) -> None:
    big = b"x" * (5 * 1024 * 1024 + 1)
    req = submit_request({"browser": {"steps": [{"upload": {"target": {"selector": "#f"}, "files": ["a.bin"]}}]}})
    req.browser.files.add(name="a.bin", content=big)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "browser.files" in field_violations(err.value)


async def test_request_id_returns_the_same_job(jobs: JobServiceStub) -> None:
    body = {"queue": unique_queue(), "requestId": "order-42", "delay": "30s", "noop": {}}
    first = await jobs.SubmitJob(submit_request(body))
    second = await jobs.SubmitJob(submit_request(body))
    assert second.id == first.id and second.existing and not first.existing


async def test_delayed_jobs_are_listed_counted_and_cancellable(jobs: JobServiceStub, queues: QueueServiceStub) -> None:
    q = unique_queue()
    ids = {}
    for name, prio in [
        ("n1", "PRIORITY_NORMAL"),
        ("b1", "PRIORITY_BULK"),
        ("c1", "PRIORITY_CRITICAL"),
        ("n2", "PRIORITY_NORMAL"),
    ]:
        sub = await jobs.SubmitJob(submit_request({"queue": q, "priority": prio, "delay": "60s", "noop": {}}))
        ids[name] = sub.id
    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=q, state=job_pb2.JOB_STATE_DELAYED, page_size=10))
    assert {j.id for j in listed.jobs} == set(ids.values())
    stats = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=q))).queue
    assert stats.counts.delayed == 4 and stats.counts.waiting == 0
    for job_id in ids.values():
        await jobs.CancelJob(pb.CancelJobRequest(id=job_id))
    stats = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=q))).queue
    assert stats.counts.delayed == 0 and stats.counts.cancelled == 4


async def test_batch_submit_and_list_pages(jobs: JobServiceStub) -> None:
    q = unique_queue()
    reqs = [submit_request({"queue": q, "labels": {"n": str(i)}, "noop": {}}) for i in range(25)]
    resp = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=reqs))
    assert len(resp.results) == 25 and len({r.id for r in resp.results}) == 25
    for r in resp.results:
        await wait_state(jobs, r.id, TERMINAL)
    seen: list[str] = []
    token = ""
    while True:
        page = await jobs.ListJobs(pb.ListJobsRequest(queue=q, page_size=10, page_token=token))
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(r.id for r in resp.results)


async def test_batch_with_a_bad_request_submits_nothing_and_names_it(
    jobs: JobServiceStub, queues: QueueServiceStub
) -> None:
    q = unique_queue()
    reqs = [submit_request({"queue": q, "noop": {}}), submit_request({"queue": q, "browser": {"steps": []}})]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=reqs))
    assert "requests[1].browser.steps" in field_violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err2:
        await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=q))
    assert err2.value.code() == grpc.StatusCode.NOT_FOUND


async def test_wait_job_long_polls_until_done(jobs: JobServiceStub) -> None:
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue(), "noop": {"sleep": "0.3s"}}))
    req = pb.WaitJobRequest(id=sub.id)
    req.timeout.FromSeconds(10)
    resp = await jobs.WaitJob(req)
    assert resp.done and resp.job.state == job_pb2.JOB_STATE_COMPLETED


async def test_queue_counts(jobs: JobServiceStub, queues: QueueServiceStub) -> None:
    q = unique_queue()
    ok = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    bad = await jobs.SubmitJob(submit_request({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}}))
    await wait_state(jobs, ok.id, TERMINAL)
    await wait_state(jobs, bad.id, TERMINAL)
    stats = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=q))).queue
    assert (stats.counts.completed, stats.counts.failed, stats.counts.waiting, stats.counts.active) == (1, 1, 0, 0)
    listed = await queues.ListQueues(queue_service_pb2.ListQueuesRequest())
    assert q in [x.name for x in listed.queues]


async def test_the_services_run_a_job_on_asyncios_own_loop(make_stack: Callable[..., Stack]) -> None:
    """CONVEYOR_EVENT_LOOP=asyncio (uvloop is the default): gateway and executor serve on
    asyncio's own event loop, and a job runs through them as on uvloop."""
    s = make_stack(CONVEYOR_EVENT_LOOP="asyncio")
    s.start_gateway()
    s.start_executor()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        stub = JobServiceStub(ch)
        sub = await stub.SubmitJob(submit_request({"queue": unique_queue(), "noop": {}}))
        done = await stub.WaitJob(job_service_pb2.WaitJobRequest(id=sub.id, timeout=duration(30)), timeout=40)
        assert done.job.state == job_pb2.JOB_STATE_COMPLETED
    assert "uvloop" not in mapped_files(s)  # asyncio's loop: uvloop not even loaded


def test_the_gateway_runs_on_uvloop_by_default(stack: Stack) -> None:
    assert "uvloop" in mapped_files(stack)


def mapped_files(s: Stack) -> str:
    """What the stack's gateway process has mapped (its libraries), from /proc."""
    assert s.gateway is not None
    return Path(f"/proc/{s.gateway.pid}/maps").read_text()
