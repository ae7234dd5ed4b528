"""The one place where protobuf messages and domain records meet."""

from __future__ import annotations

import uuid

from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import status_pb2

from conveyor.store.records import (
    EventRecord,
    EventType,
    JobRecord,
    NewJob,
    Priority,
    QueueRecord,
    State,
    Submitted,
)
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2

STATE_TO_PROTO = {
    State.WAITING: job_pb2.JOB_STATE_WAITING,
    State.DELAYED: job_pb2.JOB_STATE_DELAYED,
    State.ACTIVE: job_pb2.JOB_STATE_ACTIVE,
    State.COMPLETED: job_pb2.JOB_STATE_COMPLETED,
    State.FAILED: job_pb2.JOB_STATE_FAILED,
    State.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}

EVENT_TYPE_TO_PROTO = {
    EventType.STATE: job_pb2.JOB_EVENT_TYPE_STATE_CHANGED,
    EventType.PROGRESS: job_pb2.JOB_EVENT_TYPE_PROGRESS,
}


def _ts(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def duration_ms(d: duration_pb2.Duration) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000


def task_kind(request: job_service_pb2.SubmitJobRequest) -> str:
    return request.WhichOneof("task") or ""


def new_job(
    request: job_service_pb2.SubmitJobRequest,
    *,
    owner: str,
    now_ms: int,
    default_max_attempts: int,
    default_timeout_ms: int,
) -> NewJob:
    """A validated request as the store's NewJob (the request itself is the stored spec)."""
    run_at_ms = 0
    if request.HasField("run_at"):
        run_at_ms = request.run_at.ToMilliseconds()
    elif request.HasField("delay"):
        run_at_ms = now_ms + duration_ms(request.delay)
    return NewJob(
        id=uuid.uuid4().hex,
        queue=request.queue or "default",
        owner=owner,
        priority=Priority(request.priority or Priority.NORMAL),
        max_attempts=request.max_attempts or default_max_attempts,
        timeout_ms=duration_ms(request.timeout) if request.HasField("timeout") else default_timeout_ms,
        run_at_ms=run_at_ms,
        spec=request.SerializeToString(),
        kind=task_kind(request),
        request_id=request.request_id,
        labels=dict(request.labels),
    )


def submitted_to_proto(s: Submitted) -> job_service_pb2.SubmitJobResponse:
    return job_service_pb2.SubmitJobResponse(
        id=s.id, state=STATE_TO_PROTO[s.state], position=s.position, existing=s.existing
    )


def job_to_proto(rec: JobRecord) -> job_pb2.Job:
    job = job_pb2.Job(
        id=rec.id,
        queue=rec.queue,
        state=STATE_TO_PROTO[rec.state],
        priority=int(rec.priority),  # type: ignore[arg-type]
        progress=rec.progress,
        progress_message=rec.progress_message,
        attempt=rec.attempt,
        max_attempts=rec.attempt_limit,
        position=rec.position,
        labels=rec.labels,
        owner=rec.owner,
        last_sequence=rec.last_sequence,
        cancel_requested=rec.cancel_requested and not rec.state.terminal,
    )
    for field, ms in (
        ("create_time", rec.created_ms),
        ("start_time", rec.started_ms),
        ("end_time", rec.ended_ms),
        ("run_time", rec.run_at_ms if rec.state is State.DELAYED else 0),
    ):
        ts = _ts(ms)
        if ts is not None:
            getattr(job, field).CopyFrom(ts)
    job.timeout.FromMilliseconds(rec.timeout_ms)
    spec = job_service_pb2.SubmitJobRequest.FromString(rec.spec)
    if spec.HasField("browser"):
        job.browser.CopyFrom(spec.browser)
    elif spec.HasField("noop"):
        job.noop.CopyFrom(spec.noop)
    if rec.result is not None and rec.state is State.COMPLETED:
        job.result.ParseFromString(rec.result)
    if rec.error is not None and rec.state is not State.COMPLETED:
        job.error.ParseFromString(rec.error)
    return job


def event_to_proto(ev: EventRecord) -> job_pb2.JobEvent:
    out = job_pb2.JobEvent(
        sequence=ev.sequence,
        job_id=ev.job_id,
        queue=ev.queue,
        type=EVENT_TYPE_TO_PROTO[ev.type],
        state=STATE_TO_PROTO[ev.state],
        message=ev.message,
        attempt=ev.attempt,
        step_index=ev.step_index if ev.step_index is not None else 0,
        step_name=ev.step_name,
        queue_sequence=ev.queue_sequence,
    )
    if ev.progress is not None:
        out.progress = ev.progress
    ts = _ts(ev.time_ms)
    if ts is not None:
        out.time.CopyFrom(ts)
    if ev.error is not None:
        out.error.CopyFrom(status_pb2.Status.FromString(ev.error))
    return out


def queue_to_proto(q: QueueRecord) -> queue_service_pb2.Queue:
    c = q.counts
    return queue_service_pb2.Queue(
        name=q.name,
        paused=q.paused,
        concurrency=q.concurrency,
        counts=queue_service_pb2.QueueCounts(
            waiting=c.waiting,
            delayed=c.delayed,
            active=c.active,
            completed=c.completed,
            failed=c.failed,
            cancelled=c.cancelled,
        ),
    )
