"""Human output: the live progress of a watched job, a job's outcome, tables."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from typing import TextIO

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.rpc import code_pb2, status_pb2

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2

BAR_WIDTH = 30


def state_name(state: int) -> str:
    """ "COMPLETED" for JOB_STATE_COMPLETED."""
    try:
        return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def priority_name(priority: int) -> str:
    try:
        return job_pb2.Priority.Name(priority).removeprefix("PRIORITY_")  # type: ignore[arg-type]
    except ValueError:
        return str(priority)


def status_text(status: status_pb2.Status) -> str:
    """ "INVALID_ARGUMENT: ..." for a google.rpc.Status."""
    try:
        code = str(code_pb2.Code.Name(status.code))
    except ValueError:
        code = f"code {status.code}"
    return f"{code}: {status.message or '(no message)'}"


def to_json(message: object) -> str:
    return json_format.MessageToJson(message, indent=2)  # type: ignore[arg-type]


def _time(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


def _seconds(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp) -> float | None:
    if not start.seconds or not end.seconds:
        return None
    return (end.ToNanoseconds() - start.ToNanoseconds()) / 1e9


class WatchPrinter:
    """Prints a WatchJob stream: on a terminal, one progress bar redrawn in place
    (state changes on lines of their own); otherwise one plain line per event."""

    def __init__(self, out: TextIO, *, tty: bool | None = None, state: int = 0) -> None:
        """`state`: the state already shown (say, by `submit`), not to be repeated."""
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.state = state
        self.progress = 0
        self.message = ""
        self.attempt = 0
        self._bar_shown = False

    def handle(self, message: job_service_pb2.WatchJobResponse) -> None:
        kind = message.WhichOneof("kind")
        if kind == "job":
            self._snapshot(message.job)
        elif kind == "event":
            self._event(message.event)
        # Heartbeats only prove the stream is alive; nothing to show.

    def _snapshot(self, job: job_pb2.Job) -> None:
        changed = job.state != self.state
        self.state, self.progress, self.attempt = job.state, job.progress, job.attempt
        self.message = job.progress_message
        if changed:
            where = f", position {job.position}" if job.position else ""
            self._line(f"{state_name(job.state)}{where}")
        self._draw()

    def _event(self, event: job_pb2.JobEvent) -> None:
        changed = event.state != self.state or (
            event.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED and event.attempt != self.attempt
        )
        self.state, self.progress = event.state, event.progress
        self.attempt = event.attempt or self.attempt
        self.message = event.message if changed else (event.message or self.message)
        if self.tty:
            if changed:
                self._line(self._state_text(event))
            self._draw()
        else:
            text = f"#{event.sequence} {state_name(event.state)} {event.progress:3d}%"
            detail = event.message or self._step_text(event)
            if detail:
                text += f" {detail}"
            if event.error.message:
                text += f" ({event.error.message})"
            self._line(text)

    def _state_text(self, event: job_pb2.JobEvent) -> str:
        text = state_name(event.state)
        if event.attempt:
            text += f" (attempt {event.attempt})"
        if event.error.message:
            text += f": {event.error.message}"
        return text

    @staticmethod
    def _step_text(event: job_pb2.JobEvent) -> str:
        if event.type != job_pb2.JOB_EVENT_TYPE_PROGRESS or not (event.step_name or event.step_index):
            return ""
        return f"step {event.step_index + 1}" + (f" {event.step_name}" if event.step_name else "")

    def _line(self, text: str) -> None:
        if self.tty and self._bar_shown:
            self.out.write("\r\x1b[2K")
            self._bar_shown = False
        self.out.write(text + "\n")
        self.out.flush()

    def _draw(self) -> None:
        if not self.tty:
            return
        filled = BAR_WIDTH * max(0, min(self.progress, 100)) // 100
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        text = f"[{bar}] {self.progress:3d}%  {state_name(self.state)}"
        if self.message:
            text += f"  {self.message}"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.out.write("\r\x1b[2K" + text[:width])
        self.out.flush()
        self._bar_shown = True

    def close(self) -> None:
        if self.tty and self._bar_shown:
            self.out.write("\n")
            self.out.flush()
            self._bar_shown = False


def print_outcome(job: job_pb2.Job, out: TextIO, *, artifact_hint: bool = True) -> None:
    """A finished (or current) job: state, timing, steps, values, artifacts, error."""
    took = _seconds(job.start_time, job.end_time)
    head = f"job {job.id}: {state_name(job.state)}"
    if took is not None:
        head += f" in {took:.2f} s"
    if job.attempt:
        head += f" (attempt {job.attempt} of {job.max_attempts})"
    print(head, file=out)
    if job.error.code or job.error.message:
        print(f"error: {job.error.message} (code {job.error.code})", file=out)
    result = job.result
    if result.steps:
        print("steps:", file=out)
        for step in result.steps:
            status = "ok" if step.status == job_pb2.STEP_STATUS_OK else "FAILED"
            # Step names usually start with the action ("click #submit"); else show both.
            label = step.name if step.name.startswith(step.action) else f"{step.action} {step.name}".strip()
            line = f"  {step.index + 1:>2}. {status:<6} {label}"
            if step.duration.seconds or step.duration.nanos:
                line += f"  {step.duration.ToNanoseconds() / 1e9:.2f} s"
            if step.matched_selector:
                line += f"  matched {step.matched_selector}"
            if step.error:
                line += f"  {step.error}"
            print(line, file=out)
    if result.values:
        print("values:", file=out)
        for key in sorted(result.values):
            value = json_format.MessageToDict(result.values[key])
            print(f"  {key} = {json.dumps(value, ensure_ascii=False)}", file=out)
    if result.artifacts:
        print("artifacts:", file=out)
        for art in result.artifacts:
            print(f"  {art.name}  {art.content_type}  {art.size_bytes} bytes", file=out)
        if artifact_hint:
            first = result.artifacts[0].name
            print(f"  (fetch one: conveyor artifact {job.id} {first} -o {first})", file=out)
    if result.blocked_urls:
        print("blocked by the URL policy:", file=out)
        for url in result.blocked_urls:
            print(f"  {url}", file=out)
    if len(job.attempts) > 1:
        print("attempts:", file=out)
        for attempt in job.attempts:
            line = f"  {attempt.attempt:>2}. {state_name(attempt.outcome):<9}"
            took = _seconds(attempt.start_time, attempt.end_time)
            if took is not None:
                line += f"  {took:.2f} s"
            if attempt.error.code or attempt.error.message:
                line += f"  {attempt.error.message or f'code {attempt.error.code}'}"
            print(line.rstrip(), file=out)
    out.flush()


def print_table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def job_row(job: job_pb2.Job) -> list[str]:
    return [
        job.id,
        job.queue,
        state_name(job.state),
        priority_name(job.priority),
        f"{job.progress}%",
        f"{job.attempt}/{job.max_attempts}",
        _time(job.create_time),
    ]


JOB_HEADERS = ["ID", "QUEUE", "STATE", "PRIORITY", "PROGRESS", "ATTEMPT", "CREATED"]


# --- queues and workers ----------------------------------------------------------------
def _duration_text(d: duration_pb2.Duration) -> str:
    seconds = d.ToNanoseconds() / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _percentiles(p50: duration_pb2.Duration, p95: duration_pb2.Duration, p99: duration_pb2.Duration) -> str:
    return ", ".join(f"{name} {_duration_text(d)}" for name, d in (("p50", p50), ("p95", p95), ("p99", p99)))


def print_queue(queue: queue_service_pb2.Queue, out: TextIO) -> None:
    """One queue in detail: its settings, counts per state and statistics."""
    c, s = queue.counts, queue.stats
    rate = f"{queue.host_rate_limit} navigations/s per host" if queue.host_rate_limit else "none"
    samples = any(d.seconds or d.nanos for d in (s.wait_time_p99, s.run_time_p99))
    rows = [
        ("paused", "yes" if queue.paused else "no"),
        ("concurrency", str(queue.concurrency)),
        ("host rate limit", rate),
        (
            "jobs",
            f"waiting {c.waiting}, delayed {c.delayed}, active {c.active}, "
            f"completed {c.completed}, failed {c.failed}, cancelled {c.cancelled}",
        ),
        ("health", health_name(queue.health)),
        *(("issue", f"{issue.reason} ({health_name(issue.severity)}): {issue.message}") for issue in queue.issues),
        ("last hour", f"completed {s.completed_last_hour}, failed {s.failed_last_hour}, "
                      f"cancelled {s.cancelled_last_hour}"),
        ("success rate", success_text(s)),
        ("throughput", f"{s.throughput_per_minute:.1f} jobs/min (last 5 min)"),
        ("since start", f"completed {s.completed_total}, failed {s.failed_total}, cancelled {s.cancelled_total}"),
        ("wait time", _timing(s.wait_time_mean, s.wait_time_p50, s.wait_time_p95, s.wait_time_p99) if samples else "-"),
        ("run time", _timing(s.run_time_mean, s.run_time_p50, s.run_time_p95, s.run_time_p99) if samples else "-"),
    ]
    print(f"queue {queue.name}", file=out)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}", file=out)
    out.flush()


def health_name(health: int) -> str:
    """HEALTHY, DEGRADED, UNHEALTHY ('-' when the server did not say)."""
    return queue_service_pb2.QueueHealth.Name(health).removeprefix("QUEUE_HEALTH_") if health else "-"  # type: ignore[arg-type]


def success_text(stats: queue_service_pb2.QueueStats) -> str:
    """The last hour's success rate ('-' when no job ended in it)."""
    return f"{stats.success_rate:.1%}" if stats.HasField("success_rate") else "-"


def _timing(mean: duration_pb2.Duration, p50: duration_pb2.Duration, p95: duration_pb2.Duration,
            p99: duration_pb2.Duration) -> str:
    return f"mean {_duration_text(mean)}, {_percentiles(p50, p95, p99)}"


def age_text(ts: timestamp_pb2.Timestamp, now: float) -> str:
    """How long ago `ts` was, from `now` (seconds since the epoch): "0.4 s ago"."""
    if not ts.seconds and not ts.nanos:
        return "-"
    age = max(0.0, now - ts.ToNanoseconds() / 1e9)
    return f"{age:.1f} s ago" if age < 120 else f"{age / 60:.0f} min ago"


def worker_row(worker: queue_service_pb2.Worker, now: float) -> list[str]:
    return [
        worker.id,
        worker.host,
        str(worker.pid),
        str(worker.slots),
        ",".join(worker.running_job_ids) or "-",
        str(worker.jobs_completed),
        age_text(worker.last_heartbeat_time, now),
    ]


WORKER_HEADERS = ["ID", "HOST", "PID", "SLOTS", "RUNNING", "COMPLETED", "HEARTBEAT"]


def queue_event_line(event: job_pb2.JobEvent) -> str:
    """One line per WatchQueue event: time (UTC), queue sequence, job, state and
    progress, then the message, step or error."""
    when = event.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if event.time.seconds else "-"
    text = f"{when}  #{event.queue_sequence}  {event.job_id}  {state_name(event.state)} {event.progress}%"
    if event.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED and event.attempt:
        text += f" (attempt {event.attempt})"
    detail = event.message or WatchPrinter._step_text(event)
    if detail:
        text += f"  {detail}"
    if event.error.message:
        text += f"  error: {event.error.message}"
    return text
