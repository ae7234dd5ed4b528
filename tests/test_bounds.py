"""Bounds of every field the API takes (issue 10): out-of-range durations and
timestamps, oversized texts and lists are INVALID_ARGUMENT naming the field, with
a small error; a stored job with absurd fields still reads; a WaitJob cut short by
shutdown is UNAVAILABLE."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import Callable

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, schedule_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from tests.support.grpc_helpers import field_violations, submit_request, unique_queue
from tests.support.processes import Stack

pb, qpb, spb = job_service_pb2, queue_service_pb2, schedule_service_pb2
SMALL_TRAILER = 8 * 1024


def details_bytes(err: grpc.aio.AioRpcError) -> int:
    """Size of the error's grpc-status-details-bin trailer (0 without one)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return len(value)
    return 0


def assert_small_refusal(err: grpc.aio.AioRpcError, field: str) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details()[:300])
    assert field in field_violations(err), field_violations(err)
    assert 0 < details_bytes(err) < SMALL_TRAILER
    assert len(err.details()) < SMALL_TRAILER


def noop(**kw: object) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(queue=unique_queue("bounds"), noop=task_pb2.NoopTask(), **kw)  # type: ignore[arg-type]


def browser(step: task_pb2.Step, **kw: object) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(queue=unique_queue("bounds"), browser=task_pb2.BrowserTask(steps=[step]), **kw)  # type: ignore[arg-type]


def d(seconds: int = 0, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def target(selector: str = "#x", fallbacks: list[str] | None = None) -> task_pb2.Target:
    return task_pb2.Target(selector=selector, fallbacks=fallbacks or [])


BEYOND = 315_576_000_001  # one second past protobuf's Duration range
YEAR_2 = 2 * 366 * 24 * 3600

BAD_SUBMITS: list[tuple[str, Callable[[], pb.SubmitJobRequest], str]] = [
    ("the poison delay", lambda: noop(delay=d(315_576_000_000)), "delay"),
    ("delay beyond a year", lambda: noop(delay=d(YEAR_2)), "delay"),
    ("delay outside protobuf's range", lambda: noop(delay=d(BEYOND)), "delay"),
    ("negative delay", lambda: noop(delay=d(-1)), "delay"),
    ("negative nanos", lambda: noop(delay=d(0, -5)), "delay"),
    ("nanos out of range", lambda: noop(delay=d(1, 1_000_000_000)), "delay"),
    ("mixed signs", lambda: noop(delay=d(5, -1)), "delay"),
    ("run_at beyond a year", lambda: noop(run_at=timestamp_pb2.Timestamp(seconds=4_000_000_000)), "run_at"),
    ("run_at after 9999", lambda: noop(run_at=timestamp_pb2.Timestamp(seconds=10**15)), "run_at"),
    ("run_at before year 1", lambda: noop(run_at=timestamp_pb2.Timestamp(seconds=-(10**15))), "run_at"),
    ("run_at negative nanos", lambda: noop(run_at=timestamp_pb2.Timestamp(seconds=1, nanos=-1)), "run_at"),
    ("timeout out of range", lambda: noop(timeout=d(BEYOND)), "timeout"),
    ("timeout negative nanos", lambda: noop(timeout=d(0, -1)), "timeout"),
    ("dedup window", lambda: noop(dedup_key="k", dedup_window=d(10**11)), "dedup_window"),
    ("dedup window invalid", lambda: noop(dedup_key="k", dedup_window=d(-1, 5)), "dedup_window"),
    ("noop sleep", lambda: pb.SubmitJobRequest(noop=task_pb2.NoopTask(sleep=d(BEYOND))), "noop.sleep"),
    ("noop fail_first_attempts", lambda: pb.SubmitJobRequest(noop=task_pb2.NoopTask(fail_first_attempts=2**31 - 1)),
     "noop.fail_first_attempts"),
    ("step timeout", lambda: browser(task_pb2.Step(timeout=d(-BEYOND), click=task_pb2.ClickAction(target=target()))),
     "browser.steps[0].timeout"),
    ("type delay", lambda: browser(task_pb2.Step(type=task_pb2.TypeAction(target=target(), text="a", delay=d(3600)))),
     "browser.steps[0].type.delay"),
    ("type delay invalid", lambda: browser(task_pb2.Step(type=task_pb2.TypeAction(target=target(), delay=d(0, -1)))),
     "browser.steps[0].type.delay"),
    ("wait duration", lambda: browser(task_pb2.Step(wait=task_pb2.WaitAction(duration=d(BEYOND)))),
     "browser.steps[0].wait.duration"),
    # Sizes: each of these echoed the whole value, or had no bound at all.
    ("a 1 MB label", lambda: noop(labels={"big": "x" * 1_000_000}), "labels['big']"),
    ("a long label key", lambda: noop(labels={"k" * 100_000: "v"}), f"labels[{('k' * 40)!r}…]"),
    ("1,000 depends_on", lambda: noop(depends_on=["x" * 100] * 1000), "depends_on"),
    ("a long selector", lambda: browser(task_pb2.Step(click=task_pb2.ClickAction(target=target("#" * 100_000)))),
     "browser.steps[0].click.target.selector"),
    ("many fallbacks", lambda: browser(task_pb2.Step(click=task_pb2.ClickAction(target=target("#a", ["#b"] * 1000)))),
     "browser.steps[0].click.target.fallbacks"),
    ("a long url", lambda: browser(task_pb2.Step(navigate=task_pb2.NavigateAction(url="http://a/" + "p" * 100_000))),
     "browser.steps[0].navigate.url"),
    ("an unparsable url", lambda: browser(task_pb2.Step(navigate=task_pb2.NavigateAction(url="http://[::1"))),
     "browser.steps[0].navigate.url"),
    ("a long key to press",
     lambda: browser(task_pb2.Step(press=task_pb2.PressAction(target=target(), key="K" * 10**5))),
     "browser.steps[0].press.key"),
    ("a long extract key",
     lambda: browser(task_pb2.Step(extract=task_pb2.ExtractAction(target=target(), key="k" * 10**5))),
     "browser.steps[0].extract.key"),
    ("a long step name", lambda: browser(task_pb2.Step(name="n" * 10**5, hover=task_pb2.HoverAction(target=target()))),
     "browser.steps[0].name"),
    ("a long upload name",
     lambda: browser(task_pb2.Step(upload=task_pb2.UploadAction(target=target(), files=["f" * 10**5]))),
     "browser.steps[0].upload.files[0]"),
    ("a huge scroll", lambda: browser(task_pb2.Step(scroll=task_pb2.ScrollAction(dy=2**31 - 1))),
     "browser.steps[0].scroll.dy"),
    ("a negative count", lambda: browser(task_pb2.Step(expect=task_pb2.ExpectAction(target=target(), count=-1))),
     "browser.steps[0].expect.count"),
]


@pytest.mark.parametrize(("make", "field"), [(m, f) for _, m, f in BAD_SUBMITS], ids=[n for n, _, _ in BAD_SUBMITS])
async def test_out_of_bounds_submits_are_refused_naming_the_field(
    jobs: JobServiceStub, make: Callable[[], pb.SubmitJobRequest], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitJob(make())
    assert_small_refusal(caught.value, field)


async def test_the_poison_request_poisons_no_read(jobs: JobServiceStub) -> None:
    """The request of the issue, exactly as grpcurl sends it: refused, and every
    unfiltered ListJobs still answers."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitJob(submit_request({"queue": "poison", "noop": {}, "delay": "315576000000s"}))
    assert_small_refusal(caught.value, "delay")
    await jobs.ListJobs(pb.ListJobsRequest(page_size=1000))


async def test_a_run_at_in_the_past_means_now_and_a_year_ahead_is_fine(jobs: JobServiceStub) -> None:
    past = await jobs.SubmitJob(noop(run_at=timestamp_pb2.Timestamp(seconds=1)))
    assert past.state == job_pb2.JOB_STATE_WAITING
    soon = timestamp_pb2.Timestamp()
    soon.GetCurrentTime()
    soon.seconds += 365 * 24 * 3600
    later = await jobs.SubmitJob(noop(run_at=soon))
    assert later.state == job_pb2.JOB_STATE_DELAYED
    job = (await jobs.GetJob(pb.GetJobRequest(id=later.id))).job
    assert job.run_time.seconds == soon.seconds
    await jobs.CancelJob(pb.CancelJobRequest(id=later.id))


async def test_a_batch_of_bad_requests_gets_a_small_error(jobs: JobServiceStub) -> None:
    bad = noop(delay=d(-1), timeout=d(-1), labels={"": "x" * 1000}, max_attempts=-1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[bad] * 1000))
    assert_small_refusal(caught.value, "requests[0].delay")


async def test_other_rpcs_bound_their_ids_tokens_and_durations(
    jobs: JobServiceStub, queues: QueueServiceStub, channel: grpc.aio.Channel
) -> None:
    schedules = ScheduleServiceStub(channel)
    huge = "x" * 100_000
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: jobs.GetJob(pb.GetJobRequest(id=huge)), "id"),
        (lambda: jobs.WaitJob(pb.WaitJobRequest(id="nope", timeout=d(BEYOND))), "timeout"),
        (lambda: jobs.WaitJob(pb.WaitJobRequest(id="nope", timeout=d(0, -1))), "timeout"),
        (lambda: jobs.ListJobs(pb.ListJobsRequest(page_token=huge)), "page_token"),
        (lambda: jobs.ListJobs(pb.ListJobsRequest(queue=huge)), "queue"),
        (lambda: jobs.GetArtifact(pb.GetArtifactRequest(job_id="nope", name=huge)).read(), "name"),
        (lambda: queues.ListQueues(qpb.ListQueuesRequest(page_token=huge)), "page_token"),
        (lambda: queues.GetQueue(qpb.GetQueueRequest(queue=huge)), "queue"),
        (lambda: queues.CleanQueue(qpb.CleanQueueRequest(
            queue="q", state=job_pb2.JOB_STATE_COMPLETED, older_than=d(BEYOND))), "older_than"),
        (lambda: queues.CleanQueue(qpb.CleanQueueRequest(
            queue="q", state=job_pb2.JOB_STATE_COMPLETED, older_than=d(1, -1))), "older_than"),
        (lambda: queues.UpdateQueue(qpb.UpdateQueueRequest(queue="q", host_rate_limit=2**31 - 1)), "host_rate_limit"),
        (lambda: schedules.GetSchedule(spb.GetScheduleRequest(id=huge)), "id"),
        (lambda: schedules.DeleteSchedule(spb.DeleteScheduleRequest(id=huge)), "id"),
        (lambda: schedules.PauseSchedule(spb.PauseScheduleRequest(id=huge)), "id"),
        (lambda: schedules.ResumeSchedule(spb.ResumeScheduleRequest(id=huge)), "id"),
        (lambda: schedules.ListSchedules(spb.ListSchedulesRequest(page_token=huge)), "page_token"),
        (lambda: schedules.CreateSchedule(spb.CreateScheduleRequest(
            cron="* * * * " + huge, template=noop())), "cron"),
        (lambda: schedules.CreateSchedule(spb.CreateScheduleRequest(
            cron="* * * * *", time_zone=huge, template=noop())), "time_zone"),
        (lambda: schedules.CreateSchedule(spb.CreateScheduleRequest(
            cron="* * * * *", template=noop(delay=d(BEYOND)))), "template.delay"),
        (lambda: schedules.CreateSchedule(spb.CreateScheduleRequest(
            cron="* * * * *", template=noop(labels={"a": huge}))), "template.labels['a']"),
    ]
    for call, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()  # type: ignore[misc]
        assert_small_refusal(caught.value, field)


async def test_a_stored_job_with_absurd_fields_still_reads(jobs: JobServiceStub, stack_redis: aioredis.Redis,
                                                           stack: Stack) -> None:
    q = unique_queue("absurd")
    sub = await jobs.SubmitJob(submit_request({"queue": q, "delay": "3600s", "labels": {"k": "v"}, "noop": {}}))
    key = f"{stack.prefix}:job:{sub.id}"
    assert await stack_redis.exists(key)
    huge = str(10**20)
    await stack_redis.hset(key, mapping={
        "run_at": huge, "created": huge, "started": "-" + huge, "ended": huge, "timeout_ms": huge,
        "progress": huge, "attempt": huge, "spec": b"\xff\xff\xff", "error": b"\x0a\xff", "labels": '{"k": 5}',
        "@1:start": huge, "@1:outcome": "FAILED", "@1:error": b"\xff",
    })
    job = (await jobs.GetJob(pb.GetJobRequest(id=sub.id))).job
    assert job.id == sub.id and job.state == job_pb2.JOB_STATE_DELAYED
    assert job.create_time.ToJsonString().startswith("9999-12-31T23:59:59")
    assert job.start_time.ToJsonString().startswith("0001-01-01T00:00:00")
    assert job.labels == {"k": "5"} and job.WhichOneof("task") is None
    listed = [j.id for j in (await jobs.ListJobs(pb.ListJobsRequest(queue=q))).jobs]
    assert listed == [sub.id]
    token, found = "", False
    for _ in range(100):  # the unfiltered list, newest first: found within a few pages
        page = await jobs.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token))
        found = found or sub.id in [j.id for j in page.jobs]
        token = page.next_page_token
        if found or not token:
            break
    assert found
    watched = jobs.WatchJob(pb.WatchJobRequest(id=sub.id))
    first = await asyncio.wait_for(watched.read(), 10)
    assert first.job.id == sub.id
    watched.cancel()
    # Left in place on purpose: the session's final read of every job renders it too.


async def test_a_stored_job_with_unreadable_fields_still_reads(jobs: JobServiceStub, stack_redis: aioredis.Redis,
                                                               stack: Stack) -> None:
    """What the store's own parsing meets: Lua's exponent form, words where numbers
    go, bytes that are not UTF-8, JSON that is not, an unknown priority."""
    q = unique_queue("unreadable")
    sub = await jobs.SubmitJob(submit_request({"queue": q, "delay": "3600s", "noop": {}}))
    key = f"{stack.prefix}:job:{sub.id}"
    await stack_redis.hset(key, mapping={
        "created": "1e+20", "progress": "lots", "attempt": "", "priority": "42", "pmsg": b"\xff\xfe",
        "labels": "{not json", "depends_on": '{"a": 1}', "worker": b"\xc3",
    })
    job = (await jobs.GetJob(pb.GetJobRequest(id=sub.id))).job
    assert job.id == sub.id and job.priority == job_pb2.PRIORITY_NORMAL
    assert (job.progress, job.attempt, dict(job.labels), list(job.depends_on)) == (0, 0, {}, [])
    assert job.create_time.ToJsonString().startswith("9999-12-31")
    assert [j.id for j in (await jobs.ListJobs(pb.ListJobsRequest(queue=q))).jobs] == [sub.id]


async def test_a_forged_page_token_is_invalid_argument(jobs: JobServiceStub) -> None:
    for score, skip in ((1.0, 10**12), (1.0, -1), ("NaN", 0), ("Infinity", 0)):
        token = base64.urlsafe_b64encode(json.dumps([score, skip]).encode()).decode()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await jobs.ListJobs(pb.ListJobsRequest(page_token=token))
        assert_small_refusal(caught.value, "page_token")


async def test_wait_job_cut_short_by_shutdown_is_unavailable(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    gw = s.start_gateway()  # no executor: the job waits for good
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        stub = JobServiceStub(ch)
        sub = await stub.SubmitJob(submit_request({"noop": {"sleep": "60s"}}))
        call = stub.WaitJob(pb.WaitJobRequest(id=sub.id, timeout=d(120)))
        # A later call on the same connection answered: the WaitJob is in the server.
        await stub.GetJob(pb.GetJobRequest(id=sub.id))
        gw.signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call, 20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Answered by the gateway itself (not a connection dropped): it says why.
    assert "shutting down" in (caught.value.details() or "")
    assert gw.proc.wait(15) == 0
