"""The one place where protobuf messages and domain records meet."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TypeVar
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from conveyor.kinds import KindSpec
from conveyor.queue_stats import Health, Insights, Issue, summarize
from conveyor.store.key_store import KeyRecord
from conveyor.store.records import (
    AttemptRecord,
    EventRecord,
    EventType,
    ExecutorRecord,
    JobRecord,
    NewJob,
    Priority,
    QueueRecord,
    State,
    Submitted,
)
from conveyor.store.schedule_store import NewSchedule, ScheduleRecord
from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2, queue_service_pb2, schedule_service_pb2

STATE_TO_PROTO = {
    State.WAITING: job_pb2.JOB_STATE_WAITING,
    State.DELAYED: job_pb2.JOB_STATE_DELAYED,
    State.ACTIVE: job_pb2.JOB_STATE_ACTIVE,
    State.COMPLETED: job_pb2.JOB_STATE_COMPLETED,
    State.FAILED: job_pb2.JOB_STATE_FAILED,
    State.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}

_M = TypeVar("_M", bound=Message)

EVENT_TYPE_TO_PROTO = {
    EventType.STATE: job_pb2.JOB_EVENT_TYPE_STATE_CHANGED,
    EventType.PROGRESS: job_pb2.JOB_EVENT_TYPE_PROGRESS,
}


#: protobuf's valid ranges: a Duration within ±10,000 years, a Timestamp within
#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, nanos within ±999,999,999.
DURATION_MAX_SECONDS = 315_576_000_000
NANOS_MAX = 999_999_999
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
_TS_MIN_MS = TIMESTAMP_MIN_SECONDS * 1000
_TS_MAX_MS = TIMESTAMP_MAX_SECONDS * 1000 + 999
_DURATION_MAX_MS = DURATION_MAX_SECONDS * 1000
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def _ts(ms: int) -> timestamp_pb2.Timestamp | None:
    """A stored time as a Timestamp (None for 0); a stored value out of protobuf's
    range is shown at the nearest end of it rather than failing the read."""
    if not ms:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(_clamp(ms, (_TS_MIN_MS, _TS_MAX_MS)))
    return ts


def _parsed(message: _M, data: bytes | None) -> _M | None:
    """`data` parsed into `message`, or None when it cannot be (a stored value that
    is not what it should be must not fail the read of the job)."""
    if data is None:
        return None
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return message


def duration_ms(d: duration_pb2.Duration) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000


def task_kind(request: job_service_pb2.SubmitJobRequest) -> str:
    """The job's kind: the built-in task's field name, or the name a `kind` task gives."""
    task = request.WhichOneof("task") or ""
    return request.kind.name if task == "kind" else task


class _JobIds:
    """Fresh job ids: random (version 4) UUIDs as 32 hex digits, like uuid4().hex, from
    the OS's randomness read 256 ids at a time (one system call per id dominated the
    making of a no-op submit's NewJob). A forked process reads randomness of its own."""

    SIZE = 16
    POOL = 256

    def __init__(self) -> None:
        self._random = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._random, self._at = b"", 0

    def __call__(self) -> str:
        if self._at >= len(self._random):
            self._random, self._at = os.urandom(self.SIZE * self.POOL), 0
        b = bytearray(self._random[self._at:self._at + self.SIZE])
        self._at += self.SIZE
        b[6] = (b[6] & 0x0F) | 0x40  # version 4
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
        return b.hex()


new_job_id = _JobIds()


def new_job(
    request: job_service_pb2.SubmitJobRequest,
    *,
    owner: str,
    now_ms: int,
    default_max_attempts: int,
    default_timeout_ms: int,
    kind: KindSpec | None = None,
    max_open: int = 0,
    max_rate: int = 0,
    weight: int = 1,
    trace: str = "",
) -> NewJob:
    """A validated request as the store's NewJob (the request itself is the stored
    spec). What the request leaves out comes from its kind's defaults, then the server's.
    `trace` is the trace context it was submitted in (conveyor/tracing.py)."""
    if kind is not None:
        default_max_attempts = kind.max_attempts or default_max_attempts
        default_timeout_ms = kind.timeout_ms or default_timeout_ms
    run_at_ms = 0
    if request.HasField("run_at"):
        run_at_ms = max(request.run_at.ToMilliseconds(), now_ms)  # a time in the past is now
    elif request.HasField("delay"):
        run_at_ms = now_ms + duration_ms(request.delay)
    task = request.WhichOneof("task")
    hosts = sorted({
        (urlsplit(step.navigate.url).hostname or "").lower()
        for step in request.browser.steps if step.WhichOneof("action") == "navigate"
    } - {""}) if task == "browser" else []  # (reading an unset `browser` costs a no-op submit ~40 µs)
    return NewJob(
        id=new_job_id(),
        queue=request.queue or "default",
        owner=owner,
        priority=Priority(request.priority or Priority.NORMAL),
        max_attempts=request.max_attempts or default_max_attempts,
        timeout_ms=duration_ms(request.timeout) if request.HasField("timeout") else default_timeout_ms,
        run_at_ms=run_at_ms,
        spec=request.SerializeToString(deterministic=True),  # a repeat of a request has the same spec
        kind=request.kind.name if task == "kind" else task or "",
        request_id=request.request_id,
        labels=dict(request.labels),
        dedup_key=request.dedup_key,
        dedup_window_ms=duration_ms(request.dedup_window) if request.HasField("dedup_window") else 0,
        dedup_return_existing=request.dedup_return_existing,
        depends_on=tuple(request.depends_on),
        hosts=tuple(hosts),
        max_open=max_open,
        max_rate=max_rate,
        weight=weight,
        trace=trace,
    )


def submitted_to_proto(s: Submitted) -> job_service_pb2.SubmitJobResponse:
    return job_service_pb2.SubmitJobResponse(
        id=s.id, state=STATE_TO_PROTO[s.state], position=s.position, existing=s.existing
    )


def heartbeat_now() -> job_pb2.Heartbeat:
    # From time_ns, not Timestamp.GetCurrentTime (a datetime round trip, ~4x dearer):
    # every idle stream gets one each heartbeat period.
    ns = time.time_ns()
    return job_pb2.Heartbeat(time=timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000))


def _duration(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(_clamp(ms, (-_DURATION_MAX_MS, _DURATION_MAX_MS)))
    return d


def attempt_to_proto(a: AttemptRecord) -> job_pb2.AttemptRecord:
    out = job_pb2.AttemptRecord(attempt=_clamp(a.attempt, _INT32), outcome=STATE_TO_PROTO[a.outcome], worker=a.worker)
    for field, ms in (("start_time", a.start_ms), ("end_time", a.end_ms)):
        ts = _ts(ms)
        if ts is not None:
            getattr(out, field).CopyFrom(ts)
    error = _parsed(status_pb2.Status(), a.error)
    if error is not None:
        out.error.CopyFrom(error)
    return out


def job_to_proto(rec: JobRecord, *, estimated_start_ms: int = 0) -> job_pb2.Job:
    """A stored job as the API shows it. Never fails for what is stored: numbers out
    of range are clamped, a part that cannot be parsed is left out."""
    labels = rec.labels if isinstance(rec.labels, dict) else {}
    job = job_pb2.Job(
        id=rec.id,
        queue=rec.queue,
        state=STATE_TO_PROTO[rec.state],
        priority=int(rec.priority),  # type: ignore[arg-type]
        progress=_clamp(rec.progress, _INT32),
        progress_message=rec.progress_message,
        attempt=_clamp(rec.attempt, _INT32),
        max_attempts=_clamp(rec.attempt_limit, _INT32),
        position=_clamp(rec.position, _INT64),
        labels={str(k): str(v) for k, v in labels.items()},
        owner=rec.owner,
        last_sequence=_clamp(rec.last_sequence, _INT64),
        cancel_requested=rec.cancel_requested and not rec.state.terminal,
        depends_on=[str(d) for d in rec.depends_on],
        dedup_key=rec.dedup_key,
        attempts=[attempt_to_proto(a) for a in rec.attempts],
    )
    for field, ms in (
        ("create_time", rec.created_ms),
        ("start_time", rec.started_ms),
        ("end_time", rec.ended_ms),
        ("run_time", rec.run_at_ms if rec.state is State.DELAYED else 0),
        ("estimated_start_time", estimated_start_ms),
    ):
        ts = _ts(ms)
        if ts is not None:
            getattr(job, field).CopyFrom(ts)
    job.timeout.CopyFrom(_duration(rec.timeout_ms))
    spec = _parsed(job_service_pb2.SubmitJobRequest(), rec.spec)
    if spec is not None and spec.HasField("browser"):
        job.browser.CopyFrom(spec.browser)
    elif spec is not None and spec.HasField("noop"):
        job.noop.CopyFrom(spec.noop)
    elif spec is not None and spec.HasField("kind"):
        job.kind_task.CopyFrom(spec.kind)
    job.kind = rec.kind
    if rec.state is State.COMPLETED:
        result = _parsed(job_pb2.JobResult(), rec.result)
        if result is not None:
            job.result.CopyFrom(result)
    else:
        error = _parsed(status_pb2.Status(), rec.error)
        if error is not None:
            job.error.CopyFrom(error)
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
    error = _parsed(status_pb2.Status(), ev.error)
    if error is not None:
        out.error.CopyFrom(error)
    return out


def queue_to_proto(
    q: QueueRecord, insights: Insights | None = None, verdict: tuple[Health, list[Issue]] | None = None
) -> queue_service_pb2.Queue:
    """A queue; with `insights` (JobStore.queue_insights) its summary statistics, and
    with `verdict` (queue_stats.assess) its health and issues."""
    out = _queue_proto(q)
    if insights is not None:
        summary, st = summarize(q, insights), out.stats
        if summary.success_rate is not None:
            st.success_rate = summary.success_rate
        if q.stats.wait_ms:
            st.wait_time_mean.CopyFrom(_duration(round(summary.mean_wait_ms)))
        if q.stats.run_ms:
            st.run_time_mean.CopyFrom(_duration(round(summary.mean_run_ms)))
        st.cancelled_last_hour = summary.cancelled_last_hour
        st.throughput_per_minute = summary.throughput_per_minute
        st.completed_total = summary.totals.get("COMPLETED", 0)
        st.failed_total = summary.totals.get("FAILED", 0)
        st.cancelled_total = summary.totals.get("CANCELLED", 0)
    if verdict is not None:
        health, issues = verdict
        out.health = int(health)  # type: ignore[assignment]
        out.issues.extend(
            queue_service_pb2.QueueIssue(reason=i.reason, severity=int(i.severity), message=i.message)  # type: ignore[arg-type]
            for i in issues
        )
    return out


def _queue_proto(q: QueueRecord) -> queue_service_pb2.Queue:
    c, s = q.counts, q.stats
    return queue_service_pb2.Queue(
        name=q.name,
        paused=q.paused,
        concurrency=q.concurrency,
        host_rate_limit=q.host_rate_limit,
        last_sequence=q.last_sequence,
        counts=queue_service_pb2.QueueCounts(
            waiting=c.waiting, delayed=c.delayed, active=c.active,
            completed=c.completed, failed=c.failed, cancelled=c.cancelled,
        ),
        stats=queue_service_pb2.QueueStats(
            completed_per_minute=s.completed_per_minute,
            failed_per_minute=s.failed_per_minute,
            completed_last_hour=sum(s.completed_per_minute),
            failed_last_hour=sum(s.failed_per_minute),
            wait_time_p50=_duration(s.percentile("wait", 50)),
            wait_time_p95=_duration(s.percentile("wait", 95)),
            wait_time_p99=_duration(s.percentile("wait", 99)),
            run_time_p50=_duration(s.percentile("run", 50)),
            run_time_p95=_duration(s.percentile("run", 95)),
            run_time_p99=_duration(s.percentile("run", 99)),
        ),
    )


def key_to_proto(k: KeyRecord) -> key_service_pb2.ApiKey:
    out = key_service_pb2.ApiKey(id=k.id, name=k.name, tenant=k.tenant, role=int(k.role),  # type: ignore[arg-type]
                                 created_by=k.created_by)
    for field, ms in (("create_time", k.created_ms), ("revoke_time", k.revoked_ms)):
        ts = _ts(ms)
        if ts is not None:
            getattr(out, field).CopyFrom(ts)
    return out


def worker_to_proto(w: ExecutorRecord) -> queue_service_pb2.Worker:
    out = queue_service_pb2.Worker(
        id=w.id, host=w.host, pid=w.pid, slots=w.slots, running_job_ids=w.running_job_ids,
        jobs_completed=w.completed, kinds=w.kinds,
    )
    ts = _ts(w.seen_ms)
    if ts is not None:
        out.last_heartbeat_time.CopyFrom(ts)
    return out


# ---- schedules -------------------------------------------------------------------------


def new_schedule(
    request: schedule_service_pb2.CreateScheduleRequest,
    *,
    owner: str,
    schedule_id: str,
    default_max_attempts: int,
    default_timeout_ms: int,
    weight: int = 1,
) -> NewSchedule:
    """A validated CreateScheduleRequest as the store's NewSchedule: the template as
    the job create_job() makes at each occurrence (which sets its id, request id,
    schedule_id label and start time)."""
    template = request.template
    job = new_job(
        template,
        owner=owner,
        now_ms=0,
        default_max_attempts=default_max_attempts,
        default_timeout_ms=default_timeout_ms,
        weight=weight,
    )
    return NewSchedule(
        id=schedule_id,
        owner=owner,
        name=request.name,
        cron=" ".join(request.cron.split()),
        time_zone=request.time_zone or "UTC",
        template=job.spec,
        job=dataclasses.replace(job, id="", run_at_ms=0),
        delay_ms=duration_ms(template.delay) if template.HasField("delay") else 0,
        request_id=request.request_id,
    )


def schedule_to_proto(rec: ScheduleRecord) -> schedule_service_pb2.Schedule:
    out = schedule_service_pb2.Schedule(
        id=rec.id,
        name=rec.name,
        cron=rec.cron,
        time_zone=rec.time_zone,
        template=_parsed(job_service_pb2.SubmitJobRequest(), rec.template),
        paused=rec.paused,
        last_job_id=rec.last_job_id,
        owner=rec.owner,
        run_count=rec.run_count,
    )
    for field, ms in (
        ("next_run_time", 0 if rec.paused else rec.next_run_ms),
        ("last_run_time", rec.last_run_ms),
        ("create_time", rec.created_ms),
    ):
        ts = _ts(ms)
        if ts is not None:
            getattr(out, field).CopyFrom(ts)
    return out
