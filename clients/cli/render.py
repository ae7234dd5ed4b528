"""Human output: the live progress of a watched job, a job's outcome, tables."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from typing import TextIO

from google.protobuf import json_format, timestamp_pb2

from conveyor.v1 import job_pb2, job_service_pb2

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
