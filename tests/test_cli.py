"""The `conveyor` CLI.

- Job files (JSON, YAML, batches) and the rendering of progress, outcomes (with
  attempts), queue details, queue events and workers: no server needed.
- End to end (tests named `test_e2e_*`): `.venv/bin/conveyor` run as a real
  subprocess against the `stack` fixture (a real gateway and executor on a real
  Redis): jobs (submit, partial batches, watch, get, list, retry, cancel) and queue
  operations (queue, pause/resume, queue-set, clean, retry-failed, watch-queue,
  workers); and `conveyor up` / `conveyor demo` run whole, with every process they
  start checked gone afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import status_pb2

from clients.cli.files import JobFileError, parse_job_text, read_job_file
from clients.cli.main import parse_age
from clients.cli.render import (
    WatchPrinter,
    print_outcome,
    print_queue,
    queue_event_line,
    status_text,
    worker_row,
)
from conveyor.processes import pid_alive
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from tests.support.grpc_helpers import unique_queue
from tests.support.processes import Stack, free_port

ROOT = Path(__file__).resolve().parents[1]
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))

JOB_JSON = """
{"queue": "default", "priority": "PRIORITY_HIGH", "maxAttempts": 3,
 "runAt": "2030-01-02T03:04:05Z", "labels": {"team": "web"},
 "browser": {"steps": [
   {"navigate": {"url": "http://127.0.0.1:8080/form.html"}},
   {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
   {"click": {"target": {"selector": "#missing", "fallbacks": ["#submit"]}}},
   {"expect": {"target": {"selector": "#out"}, "textContains": "Hello Ada"}},
   {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
   {"screenshot": {"fullPage": true}, "timeout": "5s"}]}}
"""

JOB_YAML = """
queue: default
priority: PRIORITY_HIGH
maxAttempts: 3
runAt: 2030-01-02T03:04:05Z      # YAML reads this as a datetime
labels: {team: web}
browser:
  steps:
    - navigate: {url: "http://127.0.0.1:8080/form.html"}
    - fill: {target: {selector: "#name"}, text: Ada}
    - click: {target: {selector: "#missing", fallbacks: ["#submit"]}}
    - expect: {target: {selector: "#out"}, textContains: Hello Ada}
    - extract: {target: {selector: "#out"}, key: greeting}
    - screenshot: {fullPage: true}
      timeout: 5s
"""


# --- job files ---------------------------------------------------------------------------
def test_json_and_yaml_give_the_same_request(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(JOB_JSON)
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    [from_json] = read_job_file(str(tmp_path / "job.json"))
    [from_yaml] = read_job_file(str(tmp_path / "job.yaml"))
    assert from_json == from_yaml
    assert from_json.priority == job_pb2.PRIORITY_HIGH
    assert from_json.run_at.ToJsonString() == "2030-01-02T03:04:05Z"
    assert from_json.browser.steps[2].click.target.fallbacks == ["#submit"]
    assert from_json.browser.steps[5].timeout.seconds == 5
    # Without a telling suffix (or on stdin) both are recognised too.
    assert parse_job_text(JOB_YAML, "<stdin>") == parse_job_text(JOB_JSON, "<stdin>") == [from_json]
    assert read_job_file("-", io.StringIO(JOB_YAML)) == [from_json]


def test_batches_are_a_list_or_a_requests_object() -> None:
    as_list = parse_job_text('[{"noop": {}}, {"noop": {"sleep": "1s"}}]')
    as_object = parse_job_text("requests:\n  - noop: {}\n  - noop: {sleep: 1s}\n", "batch.yaml")
    assert as_list == as_object
    assert [r.noop.sleep.seconds for r in as_list] == [0, 1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("job.json", '{"noop": ', "job.json: not valid JSON: Expecting value at line 1"),
        ("job.yaml", "noop: [\n", "job.yaml: not valid YAML: expected"),
        ("job.json", "", "job.json: the file is empty"),
        ("job.json", "[1]", "job.json: requests[0]: expected an object"),
        ("job.json", '{"bogus": 1}', 'job.json: not a valid SubmitJobRequest: Message type "conveyor.v1.Submit'),
        ("job.yaml", "priority: PRIORITY_URGENT\n", "Invalid enum value PRIORITY_URGENT"),
        ("job.json", '{"requests": []}', "the list of requests is empty"),
    ],
)
def test_bad_files_are_one_clear_error(name: str, text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(JobFileError) as caught:
        read_job_file(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVEYOR, *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        cwd=ROOT,
    )


def test_a_bad_file_exits_1_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"noop": {"sleep": 5}}')  # a Duration is a string such as "5s"
    # A target nobody listens on: the file is refused before any call is made.
    result = run_cli("submit", str(bad), "--target", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {bad}: not a valid SubmitJobRequest")
    assert "sleep" in result.stderr

    missing = run_cli("submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert missing.stderr == f"error: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"


def test_an_unreachable_gateway_is_one_clear_error() -> None:
    result = run_cli("get", "some-id", "--target", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: UNAVAILABLE: ")
    assert "is a gateway running at 127.0.0.1:1?" in result.stderr
    assert result.stderr.count("\n") == 1


def test_usage_errors_exit_2() -> None:
    assert run_cli("list", "--state", "done", "--target", "127.0.0.1:1").returncode == 1
    assert run_cli("frobnicate").returncode == 2
    assert run_cli().returncode == 2


# --- rendering ---------------------------------------------------------------------------
def _event(
    seq: int, state: job_pb2.JobState.ValueType, progress: int = 0, message: str = "", step: int = 0, name: str = ""
) -> job_service_pb2.WatchJobResponse:
    kind = job_pb2.JOB_EVENT_TYPE_PROGRESS if message else job_pb2.JOB_EVENT_TYPE_STATE_CHANGED
    return job_service_pb2.WatchJobResponse(
        event=job_pb2.JobEvent(
            sequence=seq, type=kind, state=state, progress=progress, message=message,
            step_index=step, step_name=name, attempt=1,
        )
    )  # fmt: skip


STREAM = [
    job_service_pb2.WatchJobResponse(job=job_pb2.Job(id="j", state=job_pb2.JOB_STATE_WAITING, position=2)),
    _event(1, job_pb2.JOB_STATE_ACTIVE),
    _event(2, job_pb2.JOB_STATE_ACTIVE, 50, "click #submit", step=2, name="press it"),
    job_service_pb2.WatchJobResponse(heartbeat=job_pb2.Heartbeat()),
    _event(3, job_pb2.JOB_STATE_COMPLETED, 100),
]


def test_plain_output_is_one_line_per_event() -> None:
    out = io.StringIO()
    printer = WatchPrinter(out, tty=False)
    for message in STREAM:
        printer.handle(message)
    printer.close()
    assert out.getvalue().splitlines() == [
        "WAITING, position 2",
        "#1 ACTIVE   0%",
        "#2 ACTIVE  50% click #submit",
        "#3 COMPLETED 100%",
    ]


def test_a_terminal_gets_a_progress_bar_redrawn_in_place() -> None:
    out = io.StringIO()
    printer = WatchPrinter(out, tty=True)
    for message in STREAM:
        printer.handle(message)
    printer.close()
    text = out.getvalue()
    assert "\r\x1b[2K[###############---------------]  50%  ACTIVE  click #submit" in text
    assert "[##############################] 100%  COMPLETED" in text
    assert "ACTIVE (attempt 1)\n" in text
    assert text.endswith("\n")


def test_the_outcome_shows_steps_values_and_artifacts() -> None:
    job = job_pb2.Job(id="j1", state=job_pb2.JOB_STATE_COMPLETED, attempt=1, max_attempts=3)
    job.start_time.FromMilliseconds(1_000)
    job.end_time.FromMilliseconds(2_500)
    job.result.steps.add(index=2, action="click", status=job_pb2.STEP_STATUS_OK, matched_selector="#submit")
    job.result.values["greeting"].CopyFrom(struct_pb2.Value(string_value="Hello Ada"))
    job.result.values["all"].list_value.extend(["a", "b"])
    job.result.artifacts.add(name="step-6.png", content_type="image/png", size_bytes=1234)
    out = io.StringIO()
    print_outcome(job, out)
    text = out.getvalue()
    assert text.startswith("job j1: COMPLETED in 1.50 s (attempt 1 of 3)\n")
    assert "   3. ok     click  matched #submit" in text
    assert '  greeting = "Hello Ada"' in text
    assert '  all = ["a", "b"]' in text
    assert "  step-6.png  image/png  1234 bytes" in text
    assert "conveyor artifact j1 step-6.png -o step-6.png" in text
    assert "attempts:" not in text  # one attempt: nothing to tell


def test_the_outcome_lists_the_attempts_when_there_were_several() -> None:
    job = job_pb2.Job(id="j2", state=job_pb2.JOB_STATE_COMPLETED, attempt=2, max_attempts=3)
    first = job.attempts.add(attempt=1, outcome=job_pb2.JOB_STATE_FAILED, worker="w1")
    first.start_time.FromMilliseconds(1_000)
    first.end_time.FromMilliseconds(1_250)
    first.error.code, first.error.message = 14, "noop: failing attempt 1"
    job.attempts.add(attempt=2, outcome=job_pb2.JOB_STATE_COMPLETED)
    out = io.StringIO()
    print_outcome(job, out)
    assert out.getvalue().splitlines()[-3:] == [
        "attempts:",
        "   1. FAILED     0.25 s  noop: failing attempt 1",
        "   2. COMPLETED",
    ]


def _ms(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


def test_queue_details_show_settings_counts_and_stats() -> None:
    queue = queue_service_pb2.Queue(
        name="web",
        paused=True,
        concurrency=8,
        host_rate_limit=2,
        counts=queue_service_pb2.QueueCounts(waiting=3, active=1, completed=40, failed=2),
        stats=queue_service_pb2.QueueStats(
            completed_last_hour=40, failed_last_hour=2, cancelled_last_hour=1, success_rate=40 / 42,
            throughput_per_minute=0.7, completed_total=140, failed_total=5, cancelled_total=1,
            wait_time_mean=_ms(300), wait_time_p50=_ms(12), wait_time_p95=_ms(800), wait_time_p99=_ms(1500),
            run_time_mean=_ms(30_000), run_time_p50=_ms(2_000), run_time_p95=_ms(150_000), run_time_p99=_ms(300_000),
        ),
        health=queue_service_pb2.QUEUE_HEALTH_DEGRADED,
        issues=[queue_service_pb2.QueueIssue(reason="PAUSED", severity=queue_service_pb2.QUEUE_HEALTH_DEGRADED,
                                             message="the queue is paused")],
    )  # fmt: skip
    out = io.StringIO()
    print_queue(queue, out)
    assert out.getvalue().splitlines() == [
        "queue web",
        "  paused           yes",
        "  concurrency      8",
        "  host rate limit  2 navigations/s per host",
        "  jobs             waiting 3, delayed 0, active 1, completed 40, failed 2, cancelled 0",
        "  health           DEGRADED",
        "  issue            PAUSED (DEGRADED): the queue is paused",
        "  last hour        completed 40, failed 2, cancelled 1",
        "  success rate     95.2%",
        "  throughput       0.7 jobs/min (last 5 min)",
        "  since start      completed 140, failed 5, cancelled 1",
        "  wait time        mean 300 ms, p50 12 ms, p95 800 ms, p99 1.50 s",
        "  run time         mean 30.00 s, p50 2.00 s, p95 2.5 min, p99 5.0 min",
    ]
    empty = io.StringIO()
    print_queue(queue_service_pb2.Queue(name="new", concurrency=4), empty)
    assert "  host rate limit  none" in empty.getvalue()
    assert "  wait time        -" in empty.getvalue()  # no samples yet, not "0 ms"
    assert "  success rate     -" in empty.getvalue()  # no job ended yet, not "0%"


def test_queue_events_workers_and_statuses_are_one_line_each() -> None:
    event = job_pb2.JobEvent(
        queue_sequence=42, job_id="j9", state=job_pb2.JOB_STATE_ACTIVE, progress=50,
        type=job_pb2.JOB_EVENT_TYPE_PROGRESS, step_index=1, step_name="fill #name",
    )  # fmt: skip
    event.time.FromMilliseconds(1_700_000_000_123)
    assert queue_event_line(event) == "2023-11-14 22:13:20.123  #42  j9  ACTIVE 50%  step 2 fill #name"
    failed = job_pb2.JobEvent(
        queue_sequence=43, job_id="j9", state=job_pb2.JOB_STATE_DELAYED, attempt=1,
        type=job_pb2.JOB_EVENT_TYPE_STATE_CHANGED,
    )  # fmt: skip
    failed.error.message = "navigation timeout"
    assert queue_event_line(failed) == "-  #43  j9  DELAYED 0% (attempt 1)  error: navigation timeout"

    worker = queue_service_pb2.Worker(id="w1", host="box", pid=7, slots=4, running_job_ids=["a", "b"])
    worker.last_heartbeat_time.FromSeconds(1000)
    assert worker_row(worker, now=1002.5) == ["w1", "box", "7", "4", "a,b", "0", "2.5 s ago"]
    assert worker_row(queue_service_pb2.Worker(id="w2"), now=1)[4:] == ["-", "0", "-"]

    assert status_text(status_pb2.Status(code=3, message="requests[1].queue: bad")) == (
        "INVALID_ARGUMENT: requests[1].queue: bad"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)]
)
def test_ages_for_clean(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 30m", "-5", "nan", "5m1"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_age(text)


# --- end to end: the CLI against a real gateway and executor ------------------------------
def _queue() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_e2e_submit_watch_get_list(stack: Stack, tmp_path: Path) -> None:
    q = _queue()
    target = ["--target", stack.grpc_target]
    job_file = tmp_path / "noop.yaml"
    job_file.write_text(f"queue: {q}\nnoop: {{sleep: 0.1s}}\n")

    result = run_cli("submit", str(job_file), "--watch", *target)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    match = re.fullmatch(r"submitted job (\S+): WAITING, position \d+|submitted job (\S+): \w+", first)
    assert match, first
    job_id = match.group(1) or match.group(2)
    assert job_id
    assert f"job {job_id}: COMPLETED" in result.stdout
    assert re.search(r"#\d+ COMPLETED 100%", result.stdout)  # not a TTY: plain lines

    got = run_cli("get", job_id, *target)
    assert got.returncode == 0, got.stderr
    job = json.loads(got.stdout)
    assert job["state"] == "JOB_STATE_COMPLETED"
    assert job["queue"] == q

    # stdin, --quiet, then list and queues see it.
    quiet = run_cli("submit", "-", "-q", "--queue", q, *target, stdin='{"noop": {}}')
    assert quiet.returncode == 0, quiet.stderr
    second = quiet.stdout.strip()
    assert re.fullmatch(r"\S+", second)
    listed = run_cli("list", "--queue", q, "--json", *target)
    assert listed.returncode == 0, listed.stderr
    assert {json.loads(line)["id"] for line in listed.stdout.splitlines()} == {job_id, second}
    table = run_cli("list", "--queue", q, "--state", "completed", *target)
    assert job_id in table.stdout and table.stdout.startswith("ID ")
    queues = run_cli("queues", q, "--json", *target)
    assert json.loads(queues.stdout)["name"] == q

    waited = run_cli("watch", second, *target)
    assert waited.returncode == 0, waited.stderr
    assert f"job {second}: COMPLETED" in waited.stdout


def test_e2e_failed_job_exits_1_and_retry_brings_it_back(stack: Stack) -> None:
    target = ["--target", stack.grpc_target]
    q = _queue()
    body = json.dumps({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}})
    result = run_cli("submit", "-", "--watch", *target, stdin=body)
    assert result.returncode == 1, result.stdout + result.stderr
    job_id = result.stdout.split()[2].rstrip(":")
    assert f"job {job_id}: FAILED" in result.stdout

    retried = run_cli("retry", job_id, *target)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"job {job_id}: ")
    # The attempt number keeps counting: attempt 2 is past failFirstAttempts.
    watched = run_cli("watch", job_id, *target)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert f"job {job_id}: COMPLETED" in watched.stdout


def test_e2e_server_errors_are_one_line_with_the_code(stack: Stack) -> None:
    target = ["--target", stack.grpc_target]
    unknown = run_cli("cancel", "no-such-job", *target)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: NOT_FOUND: ")
    assert unknown.stderr.count("\n") == 1

    invalid = run_cli("submit", "-", *target, stdin='{"browser": {"steps": []}}')
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "browser.steps" in invalid.stderr
    assert invalid.stderr.count("\n") == 1

    cancelled = run_cli(
        "submit", "-", "-q", *target, stdin=json.dumps({"queue": _queue(), "delay": "3600s", "noop": {}})
    )
    job_id = cancelled.stdout.strip()
    assert run_cli("cancel", job_id, *target).stdout == f"job {job_id}: CANCELLED\n"
    again = run_cli("cancel", job_id, *target)
    assert again.returncode == 1 and again.stderr.startswith("error: FAILED_PRECONDITION: ")
    assert run_cli("watch", job_id, *target).returncode == 1  # ended, but not COMPLETED


# --- end to end: queue operations ----------------------------------------------------------
def _queue_detail(text: str) -> dict[str, str]:
    """`conveyor queue` output as {"paused": "yes", "jobs": "waiting 1, ...", ...}."""
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        key, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        out[key] = value
    return out


def test_e2e_pause_holds_a_job_until_resume(stack: Stack) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    paused = run_cli("pause", q, *target)
    assert (paused.returncode, paused.stdout) == (0, f"queue {q}: paused (0 waiting)\n"), paused.stderr

    submitted = run_cli("submit", "-", "-q", "--queue", q, *target, stdin='{"noop": {}}')
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    shown = run_cli("queue", q, *target)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"queue {q}\n")
    detail = _queue_detail(shown.stdout)
    assert detail["paused"] == "yes"
    assert detail["jobs"] == "waiting 1, delayed 0, active 0, completed 0, failed 0, cancelled 0"
    assert detail["last hour"] == "completed 0, failed 0, cancelled 0"
    assert detail["health"] == "DEGRADED" and detail["issue"].startswith("PAUSED (DEGRADED): the queue is paused")
    assert detail["wait time"] == detail["run time"] == detail["success rate"] == "-"
    assert json.loads(run_cli("get", job_id, *target).stdout)["state"] == "JOB_STATE_WAITING"
    assert json.loads(run_cli("queue", q, "--json", *target).stdout)["paused"] is True

    resumed = run_cli("resume", q, *target)
    assert (resumed.returncode, resumed.stdout) == (0, f"queue {q}: resumed (1 waiting)\n"), resumed.stderr
    watched = run_cli("watch", job_id, *target)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert f"job {job_id}: COMPLETED" in watched.stdout

    detail = _queue_detail(run_cli("queue", q, *target).stdout)
    assert detail["paused"] == "no"
    assert detail["jobs"] == "waiting 0, delayed 0, active 0, completed 1, failed 0, cancelled 0"
    assert detail["last hour"] == "completed 1, failed 0, cancelled 0"
    assert detail["health"] == "HEALTHY" and detail["success rate"] == "100.0%" and "issue" not in detail
    assert detail["since start"] == "completed 1, failed 0, cancelled 0"
    assert re.fullmatch(r"mean \S+ m?s, p50 \S+ m?s, p95 \S+ m?s, p99 \S+ m?s", detail["run time"]), detail


def test_e2e_queue_set_changes_concurrency_and_rate_limit(stack: Stack) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    changed = run_cli("queue-set", q, "--concurrency", "2", "--host-rate-limit", "5", *target)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == f"queue {q}: concurrency 2, host rate limit 5 navigations/s per host\n"
    got = json.loads(run_cli("queue", q, "--json", *target).stdout)
    assert (got["concurrency"], got["hostRateLimit"]) == (2, 5)

    # Only what is given changes; 0 removes the rate limit.
    again = run_cli("queue-set", q, "--host-rate-limit", "0", *target)
    assert again.stdout == f"queue {q}: concurrency 2, host rate limit none\n", again.stderr
    detail = _queue_detail(run_cli("queue", q, *target).stdout)
    assert (detail["concurrency"], detail["host rate limit"]) == ("2", "none")

    nothing = run_cli("queue-set", q, *target)
    assert nothing.returncode == 2 and "give --concurrency and/or --host-rate-limit" in nothing.stderr
    assert run_cli("queue-set", q, "--concurrency", "-1", *target).returncode == 2


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent
    return False


def test_e2e_workers_lists_the_executor(stack: Stack) -> None:
    target = ["--target", stack.grpc_target]
    alive = set(stack.executor_ids())
    assert alive
    table = run_cli("workers", *target)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "HOST", "PID", "SLOTS", "RUNNING", "COMPLETED", "HEARTBEAT"]
    assert alive <= {row.split()[0] for row in rows}
    assert all(re.search(r"\d+\.\d s ago$", row) for row in rows), rows

    workers = [json.loads(line) for line in run_cli("workers", "--json", *target).stdout.splitlines()]
    ours = [w for w in workers if w["id"] in alive]
    assert ours and all(w["slots"] > 0 and w["host"] for w in ours)
    executor = stack.executors[0]
    assert any(_descends_from(w["pid"], executor.pid) for w in ours), (executor.pid, ours)


def test_e2e_clean_deletes_completed_jobs(stack: Stack) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    done = run_cli("submit", "-", "-q", "--watch", "--queue", q, *target, stdin='{"noop": {}}')
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()

    # Other states and younger jobs are left alone.
    assert run_cli("clean", q, "--state", "failed", *target).stdout == f"queue {q}: deleted 0 failed jobs\n"
    young = run_cli("clean", q, "--state", "completed", "--older-than", "1h", *target)
    assert young.stdout == f"queue {q}: deleted 0 completed jobs that ended more than 1h ago\n", young.stderr
    assert run_cli("get", job_id, *target).returncode == 0

    cleaned = run_cli("clean", q, "--state", "completed", *target)
    assert (cleaned.returncode, cleaned.stdout) == (0, f"queue {q}: deleted 1 completed job\n"), cleaned.stderr
    gone = run_cli("get", job_id, *target)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: NOT_FOUND: ")
    assert "completed 0," in _queue_detail(run_cli("queue", q, *target).stdout)["jobs"]

    assert run_cli("clean", q, "--state", "waiting", *target).returncode == 2
    assert run_cli("clean", q, "--state", "completed", "--older-than", "soon", *target).returncode == 2
    unknown = run_cli("clean", unique_queue("never"), "--state", "completed", *target)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: NOT_FOUND: ")


def test_e2e_retry_failed_gives_failed_jobs_new_attempts(stack: Stack) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    body = json.dumps({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}})
    failed = run_cli("submit", "-", "-q", "--watch", *target, stdin=body)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job_id = failed.stdout.strip()
    assert "failed 1," in _queue_detail(run_cli("queue", q, *target).stdout)["jobs"]

    retried = run_cli("retry-failed", q, *target)
    assert (retried.returncode, retried.stdout) == (0, f"queue {q}: retried 1 failed job\n"), retried.stderr
    # Attempt 2 is past failFirstAttempts; the summary tells both attempts.
    watched = run_cli("watch", job_id, *target)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert f"job {job_id}: COMPLETED" in watched.stdout
    attempts = watched.stdout.split("attempts:\n", 1)[1].splitlines()
    assert re.fullmatch(r"   1\. FAILED +\d+\.\d\d s  \S.*", attempts[0]), attempts
    assert re.fullmatch(r"   2\. COMPLETED +\d+\.\d\d s", attempts[1]), attempts

    job = json.loads(run_cli("get", job_id, *target).stdout)
    assert [(a["attempt"], a["outcome"]) for a in job["attempts"]] == [
        (1, "JOB_STATE_FAILED"),
        (2, "JOB_STATE_COMPLETED"),
    ]
    assert job["attempts"][0]["error"]["message"]
    assert run_cli("retry-failed", q, *target).stdout == f"queue {q}: retried 0 failed jobs\n"


def test_e2e_watch_queue_follows_the_jobs_of_a_queue(stack: Stack) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    first = run_cli("submit", "-", "-q", "--watch", "--queue", q, *target, stdin='{"noop": {}}')
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    watcher = start_conveyor("watch-queue", q, "--after", "0", *target, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        # --after 0 replays the first job's events; once its end is printed the stream is live.
        watcher.wait_line(rf"  #\d+  {first_id}  COMPLETED 100%", 30)
        second = run_cli("submit", "-", "-q", "--queue", q, *target, stdin='{"noop": {"sleep": "0.2s"}}')
        assert second.returncode == 0, second.stderr
        second_id = second.stdout.strip()
        watcher.wait_line(rf"  #\d+  {second_id}  COMPLETED 100%", 30)
    finally:
        watcher.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends; by pid, our own child
        try:
            code = watcher.finish(15)
        finally:
            if watcher.proc.poll() is None:
                watcher.proc.kill()
                watcher.proc.wait(5)
    assert code == 130, watcher.output
    line = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})  #(\d+)  (\S+)  ([A-Z]+) (\d+)%.*")
    events = [m.groups() for text in watcher.seen if (m := line.fullmatch(text.rstrip("\n")))]
    sequences = [int(e[1]) for e in events]
    assert sequences == list(range(1, len(events) + 1)), watcher.output  # from the start, nothing missed or twice
    states = {job: [e[3] for e in events if e[2] == job] for job in (first_id, second_id)}
    for job, seen in states.items():
        assert "ACTIVE" in seen and seen[-1] == "COMPLETED", (job, watcher.output)
    assert {e[2] for e in events} == {first_id, second_id}


def test_e2e_submit_a_batch_with_allow_partial(stack: Stack, tmp_path: Path) -> None:
    q = unique_queue("cli")
    target = ["--target", stack.grpc_target]
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        f"requests:\n  - {{queue: {q}, noop: {{}}}}\n  - {{queue: {q}, browser: {{steps: []}}}}\n"
        f"  - {{queue: {q}, noop: {{}}}}\n"
    )
    whole = run_cli("submit", str(batch), *target)
    assert whole.returncode == 1 and whole.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "requests[1].browser.steps" in whole.stderr

    partial = run_cli("submit", str(batch), "--allow-partial", *target)
    assert partial.returncode == 1, partial.stderr
    lines = partial.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("submitted job ") and lines[2].startswith("submitted job ")
    assert lines[1].startswith("request 1 refused: INVALID_ARGUMENT: ")
    assert "requests[1].browser.steps" in lines[1]

    quiet = run_cli("submit", str(batch), "--allow-partial", "-q", *target)
    assert quiet.returncode == 1
    ids = quiet.stdout.split()
    assert len(ids) == 2 and quiet.stderr.startswith("request 1 refused: INVALID_ARGUMENT: ")
    listed = run_cli("list", "--queue", q, "--json", *target)
    assert len(listed.stdout.splitlines()) == 4  # two of each partial batch, none of the refused one


# --- end to end: conveyor up and conveyor demo ---------------------------------------------
@dataclass
class Running:
    """A `conveyor` process whose stdout is read line by line as it comes."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    seen: list[str]

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if m := re.search(pattern, line):
                return m
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {pattern!r}:\n" + "".join(self.seen))
            self.seen.append(item)
            if m := re.search(pattern, item):
                return m
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "".join(self.seen))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self.seen.append(line)
        return code

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+pid (\d+)", self.output, re.M)}


def start_conveyor(*args: str, env: dict[str, str]) -> Running:
    proc = subprocess.Popen(
        [CONVEYOR, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return Running(proc, lines, [])


def marked_processes(mark: str) -> list[int]:
    """Live processes that inherited CONVEYOR_TEST_MARK=mark: everything a `conveyor`
    process started, down to Dramatiq workers and Chromium."""
    needle = f"CONVEYOR_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def assert_all_gone(mark: str, pids: dict[str, int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids.values() if pid_alive(p)] + marked_processes(mark)
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"left running: {left} of {pids}")


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """An environment for `conveyor up`: no Redis URL (embedded), a free port, a data
    dir of its own, and a mark every descendant inherits."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        CONVEYOR_DATA_DIR=str(tmp_path / "data"),
        CONVEYOR_TEST_MARK=mark,
        CONVEYOR_EXECUTOR_SLOTS="2",
        PYTHONUNBUFFERED="1",
    )
    yield env, mark
    # Whatever a failed test left behind: stop it by pid (only our marked processes).
    for pid in marked_processes(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@needs_redis
def test_e2e_up_runs_everything_and_stops_it_all_on_sigterm(up_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, mark = up_env
    up = start_conveyor("up", "--grace", "10", env=env)
    try:
        up.wait_line(r"Conveyor is up: gRPC on 127\.0\.0\.1:\d+", 60)
        pids = up.pids()
        assert set(pids) == {"redis-server", "gateway", "executor"}
        assert all(pid_alive(p) for p in pids.values())
        # The embedded Redis listens on a unix socket in the data dir.
        assert (tmp_path / "data" / "redis" / "redis.sock").is_socket()

        health = run_cli("health", env=env)
        assert (health.returncode, health.stdout) == (0, "SERVING\n")
        submitted = run_cli("submit", "-", "-q", env=env, stdin='{"queue": "kept", "delay": "3600s", "noop": {}}')
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        up.proc.send_signal(signal.SIGTERM)
        assert up.finish(60) == 0, up.output
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    assert "SIGTERM: stopping" in up.output
    assert "redis-server stopped (exit code 0)" in up.output
    assert_all_gone(mark, pids)
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()

    # AOF on: a second `up` on the same data dir still has the job.
    again = start_conveyor("up", env=env)
    try:
        again.wait_line("Conveyor is up", 60)
        got = run_cli("get", job_id, env=env)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["queue"] == "kept"
        again.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert again.finish(60) == 0, again.output
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
    assert_all_gone(mark, again.pids())


@needs_redis
def test_e2e_up_stops_everything_when_a_child_dies(up_env: tuple[dict[str, str], str]) -> None:
    env, mark = up_env
    up = start_conveyor("up", "--grace", "10", env=env)
    try:
        up.wait_line("Conveyor is up", 60)
        pids = up.pids()
        os.kill(pids["gateway"], signal.SIGKILL)
        assert up.finish(60) == 1
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    assert re.search(rf"error: gateway \(pid {pids['gateway']}\) exited with signal SIGKILL", up.output), up.output
    assert "stopping everything" in up.output
    assert_all_gone(mark, pids)


@needs_redis
def test_e2e_up_refuses_a_data_dir_in_use(up_env: tuple[dict[str, str], str]) -> None:
    env, mark = up_env
    first = start_conveyor("up", env=env)
    try:
        first.wait_line("Conveyor is up", 60)
        second = run_cli("up", env={**env, "CONVEYOR_GRPC_ADDR": f"127.0.0.1:{free_port()}"})
        assert second.returncode == 1
        assert "another redis-server" in second.stderr and "is `conveyor up` already running?" in second.stderr
        first.proc.send_signal(signal.SIGTERM)
        assert first.finish(60) == 0
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    assert_all_gone(mark, first.pids())


@needs_redis
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
@pytest.mark.timeout(150)
def test_e2e_demo_runs_the_example_job_and_cleans_up(up_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, mark = up_env
    demo = start_conveyor("demo", "--timeout", "60", env=env)
    try:
        code = demo.finish(120)
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    out = demo.output
    assert code == 0, out
    assert re.search(r"job \S+: COMPLETED", out)
    assert 'greeting = "Hello Ada"' in out
    assert re.search(r"3\. ok\s+click\b.*matched #submit", out), out  # the fallback matched
    assert re.search(r"\S+\.png\s+image/png\s+\d+ bytes", out)
    shot = tmp_path / "data" / "demo-screenshot.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "demo finished: the job COMPLETED" in out
    pids = demo.pids()
    assert set(pids) == {"redis-server", "gateway", "executor"}
    assert_all_gone(mark, pids)


@needs_redis
def test_e2e_up_killed_with_sigkill_leaves_no_orphans(up_env: tuple[dict[str, str], str]) -> None:
    """The children get SIGTERM from the kernel when `up` dies (PR_SET_PDEATHSIG)."""
    env, mark = up_env
    up = start_conveyor("up", env=env)
    try:
        up.wait_line("Conveyor is up", 60)
        pids = up.pids()
    finally:
        up.proc.kill()
        up.proc.wait(10)
    assert_all_gone(mark, pids, timeout=60)


def test_e2e_up_uses_a_configured_redis_instead_of_its_own(
    up_env: tuple[dict[str, str], str], redis_url: str, tmp_path: Path
) -> None:
    env, mark = up_env
    env = {**env, "CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_KEY_PREFIX": f"up{uuid.uuid4().hex[:6]}"}
    up = start_conveyor("up", env=env)
    try:
        up.wait_line("Conveyor is up", 60)
        assert f"using Redis at {redis_url} (CONVEYOR_REDIS_URL)" in up.output
        pids = up.pids()
        assert set(pids) == {"gateway", "executor"}
        done = run_cli("submit", "-", "--watch", env=env, stdin='{"noop": {"sleep": "0.05s"}}')
        assert done.returncode == 0, done.stdout + done.stderr
        up.proc.send_signal(signal.SIGTERM)
        assert up.finish(60) == 0, up.output
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    assert not (tmp_path / "data" / "redis").exists()
    assert_all_gone(mark, pids)


def test_up_refuses_a_port_in_use(up_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = up_env
    host, port = env["CONVEYOR_GRPC_ADDR"].split(":")
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a gRPC server does
        busy.bind((host, int(port)))
        busy.listen()
        result = run_cli("up", env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: cannot listen on {host}:{port}: Address already in use "
        "(is another gateway running? set CONVEYOR_GRPC_ADDR or --grpc-addr)\n"
    )
    assert not (tmp_path / "data").exists()  # refused before starting anything


# --- job kinds: submit --kind/--input, kinds, list --kind, retry-failed overrides ----------------
def test_kind_input_is_json_or_a_file_of_json_or_yaml(tmp_path: Path) -> None:
    from clients.cli.main import CliError, read_kind_input

    assert read_kind_input('{"texts": ["a b"], "top": 2}') == {"texts": ["a b"], "top": 2}
    (tmp_path / "in.json").write_text('{"messages": [{"role": "user", "content": "hi"}]}')
    (tmp_path / "in.yaml").write_text("messages:\n  - role: user\n    content: hi\n")
    assert read_kind_input(f"@{tmp_path / 'in.json'}") == read_kind_input(f"@{tmp_path / 'in.yaml'}") == {
        "messages": [{"role": "user", "content": "hi"}]
    }
    assert read_kind_input("@-", io.StringIO('{"a": 1}')) == {"a": 1}
    (tmp_path / "empty.json").write_text(" \n")
    for text, message in [
        ("{nope", "--input: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[1, 2]", "--input: expected an object (the kind's input), got list"),
        (f"@{tmp_path / 'missing.json'}", f"--input {tmp_path / 'missing.json'}: cannot read: No such file"),
        (f"@{tmp_path / 'empty.json'}", f"--input {tmp_path / 'empty.json'}: the file is empty"),
    ]:
        with pytest.raises(CliError) as caught:
            read_kind_input(text)
        assert str(caught.value).startswith(message), str(caught.value)


def test_kind_submit_usage_and_input_errors_come_before_any_call(tmp_path: Path) -> None:
    nobody = ["--target", "127.0.0.1:1"]  # nobody listens: each is refused before a call
    bad = run_cli("submit", "--kind", "chat", "--input", '"hello"', *nobody)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "error: --input: expected an object (the kind's input), got str\n"
    unjson = run_cli("submit", "--kind", "chat", "--input", '{"a": 1,}', *nobody)
    assert unjson.returncode == 1 and unjson.stderr.startswith("error: --input: not valid JSON: ")
    named = run_cli("submit", "--kind", "Not A Kind!", "--input", "{}", *nobody)
    assert named.returncode == 1 and named.stderr.startswith("error: UNAVAILABLE: ")  # the name is the server's call
    job_file = tmp_path / "noop.json"
    job_file.write_text('{"noop": {}}')
    for args in (
        ["submit", str(job_file), "--kind", "chat"],  # both
        ["submit"],  # neither
        ["submit", str(job_file), "--input", "{}"],  # --input without --kind
    ):
        usage = run_cli(*args, *nobody)
        assert usage.returncode == 2, (args, usage.stderr)
        assert "usage: conveyor" in usage.stderr


def test_kinds_counts_the_workers_that_serve_each() -> None:
    from clients.cli.main import kinds_table

    workers = [
        queue_service_pb2.Worker(id="a", kinds=["noop", "browser"]),
        queue_service_pb2.Worker(id="b", kinds=["noop", "chat", "chat"]),
        queue_service_pb2.Worker(id="c"),  # an executor older than kinds: none published
    ]
    assert kinds_table(workers) == [("browser", 1), ("chat", 1), ("noop", 2)]
    assert kinds_table([]) == []


def test_e2e_kinds_of_the_examples_through_the_cli(redis_url: str, tmp_path: Path) -> None:
    """An executor serving only the example kinds (and noop), loaded by CONVEYOR_KINDS
    from examples/ on the path: the CLI lists them, submits them by name with JSON or
    YAML input, shows progress and output, and lists and retries them by kind."""
    from tests.support.processes import stack_env

    path = os.pathsep.join(p for p in (str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")) if p)
    env = stack_env(
        redis_url, tmp_path / "data",
        PYTHONPATH=path,
        CONVEYOR_KINDS="conveyor_examples.chat,conveyor_examples.wordcount,conveyor_examples.flaky",
        CONVEYOR_EXECUTOR_KINDS="chat,chat-batch,wordcount,flaky,noop",
        CONVEYOR_CHAT_THINK_SECONDS="0.05",
    )  # fmt: skip
    stack = Stack(redis_url, env, tmp_path / "logs")
    try:
        stack.start_gateway()
        stack.start_executor()
        _e2e_example_kinds(stack, tmp_path)
    finally:
        stack.stop()
        stack.print_problems()


def _e2e_example_kinds(stack: Stack, tmp_path: Path) -> None:
    target = ["--target", stack.grpc_target]
    q = _queue()

    listed = run_cli("kinds", "--json", *target)
    assert listed.returncode == 0, listed.stderr
    kinds = {row["kind"]: row["workers"] for row in map(json.loads, listed.stdout.splitlines())}
    assert kinds == {"chat": 1, "chat-batch": 1, "flaky": 1, "noop": 1, "wordcount": 1}  # no browser
    table = run_cli("kinds", *target).stdout.splitlines()
    assert table[0].split() == ["KIND", "WORKERS"] and table[1].split() == ["chat", "1"]

    chat_input = {"messages": [{"role": "user", "content": "what is 6 * 7?"}], "metadata": {"session": "s-1"}}
    chatted = run_cli("submit", "--kind", "chat", "--input", json.dumps(chat_input), "--queue", q, "--watch", *target)
    assert chatted.returncode == 0, chatted.stdout + chatted.stderr
    chat_id = chatted.stdout.split()[2].rstrip(":")
    assert re.search(r"#\d+ ACTIVE +\d+% thinking\.\.\.", chatted.stdout), chatted.stdout
    assert "replying..." in chatted.stdout
    assert f"job {chat_id}: COMPLETED" in chatted.stdout
    assert '    "content": "6 * 7 = 42"' in chatted.stdout.split("output:\n", 1)[1]

    job = json.loads(run_cli("get", chat_id, *target).stdout)
    assert job["kind"] == "chat"
    assert job["result"]["output"] == {
        "reply": {"role": "assistant", "content": "6 * 7 = 42"}, "turns": 1, "metadata": {"session": "s-1"}
    }

    yaml_input = tmp_path / "count.yaml"
    yaml_input.write_text("texts:\n  - the cat and the hat\ntop: 1\n")
    counted = run_cli("submit", "--kind", "wordcount", "--input", f"@{yaml_input}", "--queue", q, "-q", "-w", *target)
    assert counted.returncode == 0, counted.stderr
    count_id = counted.stdout.strip()
    output = json.loads(run_cli("get", count_id, *target).stdout)["result"]["output"]
    assert output["top"] == [{"word": "the", "count": 2}] and output["words"] == 5

    # A permanent error fails the job at once, though the kind allows 2 attempts.
    empty = run_cli("submit", "--kind", "wordcount", "--input", '{"texts": []}', "--queue", q, "--watch", *target)
    assert empty.returncode == 1, empty.stdout + empty.stderr
    failed_id = empty.stdout.split()[2].rstrip(":")
    assert f"job {failed_id}: FAILED" in empty.stdout and "(attempt 1 of 2)" in empty.stdout
    assert "`texts` is empty" in empty.stdout

    refused = run_cli("submit", "--kind", "chat", "--input", '{"messages": []}', "--queue", q, *target)
    assert refused.returncode == 1 and refused.stderr.startswith("error: INVALID_ARGUMENT: "), refused.stderr
    assert "messages" in refused.stderr and refused.stderr.count("\n") == 1
    unknown = run_cli("submit", "--kind", "no-such-kind", "--input", "{}", "--queue", q, *target)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: INVALID_ARGUMENT: "), unknown.stderr

    by_kind = run_cli("list", "--queue", q, "--kind", "wordcount", "--json", *target)
    assert by_kind.returncode == 0, by_kind.stderr
    assert {json.loads(line)["id"] for line in by_kind.stdout.splitlines()} == {count_id, failed_id}

    again = run_cli("retry-failed", q, "--priority", "low", "--max-attempts", "1", *target)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"queue {q}: retried 1 failed job (priority low, 1 attempt)\n"
    assert json.loads(run_cli("get", failed_id, *target).stdout)["priority"] == "PRIORITY_LOW"
