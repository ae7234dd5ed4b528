"""Checks requests before anything is written, and names every bad field (in the
request's field paths, as BadRequest.FieldViolation wants them).

Every bound of the API is a named constant here (the README's table lists them);
the servicers and validate_submit use them, nothing else restates them. A
description never carries more than a short prefix of what the caller sent
(`shown`), and a refusal carries at most MAX_VIOLATIONS violations (`capped`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.errors import FieldViolation, InvalidArgument
from conveyor.v1 import job_pb2, job_service_pb2, task_pb2
from gateway.mapping import DURATION_MAX_SECONDS, NANOS_MAX, TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS, duration_ms

# ---- names and ids -----------------------------------------------------------------
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Job ids, and every id the API takes (schedule ids are checked by SCHEDULE_ID_TEXT).
MAX_ID = 64
JOB_ID = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_ID}}}$")
#: A schedule id as the API takes it: an empty or unknown one is NOT_FOUND, anything
#: that could not be an id at all is INVALID_ARGUMENT.
SCHEDULE_ID_TEXT = re.compile(rf"^[A-Za-z0-9_-]{{0,{MAX_ID}}}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
VALUE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
#: Artifact names are made by the executor; the artifact store takes at most this many characters.
MAX_ARTIFACT_NAME = 200
MAX_PAGE_TOKEN = 512
WAIT_UNTIL = {"", "load", "domcontentloaded", "networkidle", "commit"}
LOAD_STATES = {"load", "domcontentloaded", "networkidle"}
ELEMENT_STATES = {"", "visible", "hidden", "attached", "detached"}
BUTTONS = {"", "left", "right", "middle"}

# ---- a job -------------------------------------------------------------------------
MAX_ATTEMPTS = 100
MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
MAX_REQUEST_ID = 128
MAX_DEPENDENCIES = 100
#: How far ahead `delay` and `run_at` (and a schedule template's `delay`) may start a job.
MAX_AHEAD_MS = 366 * 24 * 3600 * 1000
MAX_DEDUP_WINDOW_MS = 30 * 24 * 3600 * 1000
#: The longest backoff a job's own `retry` may ask for (base and max).
MAX_BACKOFF_MS = 24 * 3600 * 1000

# ---- a browser task ----------------------------------------------------------------
MAX_TEXT = 100_000
MAX_FILES = 64
MAX_CONTENT_TYPE = 255
MAX_STEP_NAME = 128
MAX_SELECTOR = 4096
MAX_FALLBACKS = 16
MAX_URL = 8192
MAX_KEY = 64
MAX_OPTIONS = 256
MAX_OPTION = 1024
MAX_ATTRIBUTE = 256
MAX_SCROLL_PX = 1_000_000
MAX_EXPECT_COUNT = 100_000
MAX_KEY_DELAY_MS = 1000
TARGETED = ("click", "fill", "type", "clear", "press", "hover", "select", "check", "uncheck", "upload")

# ---- other RPCs --------------------------------------------------------------------
MAX_BATCH = 1000
WAIT_DEFAULT_S = 30.0
MAX_WAIT_S = 300.0
MAX_SEQUENCE = 2**53 - 1
MAX_QUEUE_PAGE = 1000
MAX_BULK = 10_000
MAX_CONCURRENCY = 100_000
MAX_HOST_RATE_LIMIT = 1_000_000
#: The most events a WatchQueue message carries (WatchQueueRequest.max_batch_size).
MAX_WATCH_BATCH = 1000
MAX_OLDER_THAN_MS = 10 * 366 * 24 * 3600 * 1000
MAX_CRON = 256
MAX_TIME_ZONE = 64

# ---- what an error shows -----------------------------------------------------------
SHOWN_CHARS = 40
MAX_VIOLATIONS = 10


def shown(value: str) -> str:
    """The caller's value as an error may show it: the repr of a short prefix."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return repr(value[:SHOWN_CHARS]) + "…"


def capped(violations: list[FieldViolation]) -> list[FieldViolation]:
    """At most MAX_VIOLATIONS of them, the last saying how many more were left out."""
    if len(violations) <= MAX_VIOLATIONS:
        return violations
    rest = violations[MAX_VIOLATIONS - 1:]
    return [*violations[:MAX_VIOLATIONS - 1], FieldViolation(rest[0].field, f"and {len(rest)} more problems")]


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def duration_problem(d: duration_pb2.Duration, max_ms: int, *, positive: bool = False) -> str | None:
    """Why `d` is not a duration between 0 (excluded when `positive`) and `max_ms`;
    None when it is one."""
    most = _seconds(max_ms)
    span = f"must be positive and at most {most}" if positive else f"must be between 0 and {most}"
    if abs(d.seconds) > DURATION_MAX_SECONDS or abs(d.nanos) > NANOS_MAX or (d.seconds * d.nanos < 0):
        return f"not a valid duration; {span}"
    ms = duration_ms(d)
    if d.seconds < 0 or d.nanos < 0 or ms > max_ms or (positive and ms <= 0):
        return span
    return None


def timestamp_problem(ts: timestamp_pb2.Timestamp) -> str | None:
    if not TIMESTAMP_MIN_SECONDS <= ts.seconds <= TIMESTAMP_MAX_SECONDS or not 0 <= ts.nanos <= NANOS_MAX:
        return "not a valid timestamp (0001-01-01 to 9999-12-31, nanos 0 to 999999999)"
    return None


def page_token_problem(token: str) -> FieldViolation | None:
    if len(token) > MAX_PAGE_TOKEN:
        return FieldViolation("page_token", "not a token this server issued")
    return None


def check_page_token(token: str) -> str:
    problem = page_token_problem(token)
    if problem:
        raise InvalidArgument(problem)
    return token


def check_job_id(value: str, field: str = "id") -> str:
    if not JOB_ID.match(value):
        raise InvalidArgument(FieldViolation(field, f"a job id (letters, digits, '-', '_'; 1 to {MAX_ID})"))
    return value


def check_schedule_id(value: str) -> str:
    if not SCHEDULE_ID_TEXT.match(value):
        raise InvalidArgument(FieldViolation("id", f"a schedule id (letters, digits, '-', '_'; at most {MAX_ID})"))
    return value


def check_queue(name: str, field: str = "queue") -> str:
    if not QUEUE_NAME.match(name):
        raise InvalidArgument(FieldViolation(
            field, "a queue name is required: letters, digits, '.', '_' and '-', at most 64, "
                   "starting with a letter or digit"))
    return name


def validate_schedule_bounds(cron: str, time_zone: str) -> list[FieldViolation]:
    """The sizes of a CreateScheduleRequest's texts, checked before they are parsed
    (the parsers' messages quote them)."""
    v: list[FieldViolation] = []
    if len(cron) > MAX_CRON:
        v.append(FieldViolation("cron", f"at most {MAX_CRON} characters"))
    if len(time_zone) > MAX_TIME_ZONE:
        v.append(FieldViolation("time_zone", f"at most {MAX_TIME_ZONE} characters (an IANA name such as 'UTC')"))
    return v


@dataclass(frozen=True)
class Limits:
    max_steps: int
    max_file_bytes: int
    max_request_bytes: int
    max_job_timeout_ms: int


def validate_submit(
    req: job_service_pb2.SubmitJobRequest, limits: Limits, prefix: str = "", *, now_ms: int | None = None
) -> list[FieldViolation]:
    """Every bad field of a SubmitJobRequest (at most MAX_VIOLATIONS of them)."""
    v: list[FieldViolation] = []
    now = int(time.time() * 1000) if now_ms is None else now_ms

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(prefix + field, description))

    if req.queue and not QUEUE_NAME.match(req.queue):
        bad("queue", "letters, digits, '.', '_' and '-' only, at most 64, starting with a letter or digit")
    if req.priority not in job_pb2.Priority.values():
        bad("priority", f"unknown priority {req.priority}")
    if not 0 <= req.max_attempts <= MAX_ATTEMPTS:
        bad("max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 for the default)")
    if req.HasField("timeout"):
        problem = duration_problem(req.timeout, limits.max_job_timeout_ms, positive=True)
        if problem:
            bad("timeout", problem)
    if req.HasField("delay") and req.HasField("run_at"):
        bad("run_at", "give either delay or run_at, not both")
    if req.HasField("delay"):
        problem = duration_problem(req.delay, MAX_AHEAD_MS)
        if problem:
            bad("delay", problem)
    if req.HasField("run_at"):
        problem = timestamp_problem(req.run_at)
        if problem:
            bad("run_at", problem)
        elif req.run_at.ToMilliseconds() > now + MAX_AHEAD_MS:
            bad("run_at", f"at most {MAX_AHEAD_MS // (24 * 3600 * 1000)} days ahead (a time in the past is now)")
    if len(req.request_id) > MAX_REQUEST_ID:
        bad("request_id", f"at most {MAX_REQUEST_ID} characters")
    if len(req.labels) > MAX_LABELS:
        bad("labels", f"at most {MAX_LABELS} labels")
    else:
        for key, value in req.labels.items():
            if not key or len(key) > MAX_LABEL_KEY:
                bad(f"labels[{shown(key)}]", f"label keys are 1 to {MAX_LABEL_KEY} characters")
            elif len(value) > MAX_LABEL_VALUE:
                bad(f"labels[{shown(key)}]", f"label values are at most {MAX_LABEL_VALUE} characters")

    if len(req.dedup_key) > MAX_REQUEST_ID:
        bad("dedup_key", f"at most {MAX_REQUEST_ID} characters")
    if req.HasField("dedup_window"):
        if not req.dedup_key:
            bad("dedup_window", "needs a dedup_key")
        problem = duration_problem(req.dedup_window, MAX_DEDUP_WINDOW_MS)
        if problem:
            bad("dedup_window", problem)
    if len(req.depends_on) > MAX_DEPENDENCIES:
        bad("depends_on", f"at most {MAX_DEPENDENCIES} jobs")
    else:
        for i, dep in enumerate(req.depends_on):
            if not JOB_ID.match(dep):
                bad(f"depends_on[{i}]", "a job id")

    if req.HasField("retry"):
        if req.retry.backoff not in task_pb2.Backoff.values():
            bad("retry.backoff", f"unknown backoff {req.retry.backoff}")
        for name in ("base", "max"):
            if req.retry.HasField(name):
                problem = duration_problem(getattr(req.retry, name), MAX_BACKOFF_MS)
                if problem:
                    bad(f"retry.{name}", problem)
        if (req.retry.HasField("base") and req.retry.HasField("max")
                and duration_ms(req.retry.max) < duration_ms(req.retry.base)):
            bad("retry.max", "must not be shorter than retry.base")

    kind = req.WhichOneof("task")
    if kind is None:
        bad("task", "a task is required: browser, noop or kind")
    elif kind == "kind":
        pass  # the kind's name and input: checked against what its executors published (gateway/kind_catalog.py)
    elif kind == "noop":
        if req.noop.HasField("sleep"):
            problem = duration_problem(req.noop.sleep, limits.max_job_timeout_ms)
            if problem:
                bad("noop.sleep", f"{problem} (the job time limit)")
        if not 0 <= req.noop.fail_first_attempts <= MAX_ATTEMPTS:
            bad("noop.fail_first_attempts", f"must be between 0 and {MAX_ATTEMPTS}")
    else:
        v += _validate_browser(req.browser, limits, prefix + "browser")
    if not v and req.ByteSize() > limits.max_request_bytes:
        field = "browser.files" if kind == "browser" and req.browser.files else (kind or "task")
        bad(field, f"the request is {req.ByteSize()} bytes; at most {limits.max_request_bytes}")
    return capped(v)


def _validate_browser(task: task_pb2.BrowserTask, limits: Limits, path: str) -> list[FieldViolation]:
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(f"{path}.{field}", description))

    names: set[str] = set()
    total = 0
    if len(task.files) > MAX_FILES:
        bad("files", f"{len(task.files)} files; at most {MAX_FILES}")
    else:
        for i, f in enumerate(task.files):
            if not FILE_NAME.match(f.name):
                bad(f"files[{i}].name", "a plain file name (letters, digits, '.', '_', '-', ' '; at most 128)")
            elif f.name in names:
                bad(f"files[{i}].name", f"duplicate file name {shown(f.name)}")
            if len(f.content_type) > MAX_CONTENT_TYPE:
                bad(f"files[{i}].content_type", f"at most {MAX_CONTENT_TYPE} characters")
            names.add(f.name)
            total += len(f.content)
    if total > limits.max_file_bytes:
        bad("files", f"{total} bytes of files; at most {limits.max_file_bytes}")

    if not task.steps:
        bad("steps", "at least one step is required")
    if len(task.steps) > limits.max_steps:
        bad("steps", f"{len(task.steps)} steps; at most {limits.max_steps}")
        return v
    for i, step in enumerate(task.steps):
        v += _validate_step(step, names, limits, f"{path}.steps[{i}]")
        if len(v) > MAX_VIOLATIONS:
            break  # capped anyway: no need to look further
    return v


def _target(t: task_pb2.Target, path: str, v: list[FieldViolation], required: bool = True) -> None:
    if required and not t.selector:
        v.append(FieldViolation(f"{path}.target.selector", "a selector is required"))
    if len(t.selector) > MAX_SELECTOR:
        v.append(FieldViolation(f"{path}.target.selector", f"at most {MAX_SELECTOR} characters"))
    if len(t.fallbacks) > MAX_FALLBACKS:
        v.append(FieldViolation(f"{path}.target.fallbacks", f"at most {MAX_FALLBACKS} fallbacks"))
        return
    for j, fb in enumerate(t.fallbacks):
        if not fb or len(fb) > MAX_SELECTOR:
            v.append(FieldViolation(f"{path}.target.fallbacks[{j}]", f"a selector of 1 to {MAX_SELECTOR} characters"))


def _text(value: str, limit: int, field: str, v: list[FieldViolation]) -> None:
    if len(value) > limit:
        v.append(FieldViolation(field, f"at most {limit} characters"))


def _validate_step(step: task_pb2.Step, files: set[str], limits: Limits, path: str) -> list[FieldViolation]:
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(f"{path}.{field}", description))

    _text(step.name, MAX_STEP_NAME, f"{path}.name", v)
    if step.HasField("timeout"):
        problem = duration_problem(step.timeout, limits.max_job_timeout_ms, positive=True)
        if problem:
            bad("timeout", f"{problem} (the job time limit)")
    action = step.WhichOneof("action")
    if action is None:
        v.append(FieldViolation(path, "a step needs exactly one action (navigate, click, fill, ...)"))
        return v
    a = getattr(step, action)
    p = f"{path}.{action}"
    if action in TARGETED:
        _target(a.target, p, v)
    if action == "navigate":
        if len(a.url) > MAX_URL:
            v.append(FieldViolation(f"{p}.url", f"at most {MAX_URL} characters"))
        elif not _http_url(a.url):
            v.append(FieldViolation(f"{p}.url", f"only http and https URLs with a host, got {shown(a.url)}"))
        if a.wait_until not in WAIT_UNTIL:
            v.append(FieldViolation(f"{p}.wait_until", f"one of {sorted(WAIT_UNTIL - {''})}"))
    elif action == "click":
        if a.button not in BUTTONS:
            v.append(FieldViolation(f"{p}.button", "left, right or middle"))
        if not 0 <= a.click_count <= 3:
            v.append(FieldViolation(f"{p}.click_count", "between 1 and 3"))
    elif action in ("fill", "type"):
        _text(a.text, MAX_TEXT, f"{p}.text", v)
        if action == "type" and a.HasField("delay"):
            problem = duration_problem(a.delay, MAX_KEY_DELAY_MS)
            if problem:
                v.append(FieldViolation(f"{p}.delay", f"{problem} (per key)"))
    elif action == "press":
        if not a.key:
            v.append(FieldViolation(f"{p}.key", "a key is required, e.g. 'Enter'"))
        _text(a.key, MAX_KEY, f"{p}.key", v)
    elif action == "select":
        if not a.values and not a.labels:
            v.append(FieldViolation(f"{p}.values", "give values or labels"))
        for field in ("values", "labels"):
            options = getattr(a, field)
            if len(options) > MAX_OPTIONS:
                v.append(FieldViolation(f"{p}.{field}", f"at most {MAX_OPTIONS}"))
                continue
            for j, option in enumerate(options):
                _text(option, MAX_OPTION, f"{p}.{field}[{j}]", v)
    elif action == "scroll":
        if not a.target.selector and not (a.dx or a.dy):
            v.append(FieldViolation(f"{p}.target", "give a target to scroll into view, or dx/dy"))
        _target(a.target, p, v, required=False)
        for field in ("dx", "dy"):
            if abs(getattr(a, field)) > MAX_SCROLL_PX:
                v.append(FieldViolation(f"{p}.{field}", f"between -{MAX_SCROLL_PX} and {MAX_SCROLL_PX} pixels"))
    elif action == "wait":
        given = [bool(a.target.selector), a.HasField("duration"), bool(a.url_contains), bool(a.load_state)]
        if sum(given) != 1:
            v.append(FieldViolation(p, "give exactly one of target, duration, url_contains, load_state"))
        _target(a.target, p, v, required=False)
        if a.state not in ELEMENT_STATES:
            v.append(FieldViolation(f"{p}.state", f"one of {sorted(ELEMENT_STATES - {''})}"))
        if a.load_state and a.load_state not in LOAD_STATES:
            v.append(FieldViolation(f"{p}.load_state", f"one of {sorted(LOAD_STATES)}"))
        _text(a.url_contains, MAX_URL, f"{p}.url_contains", v)
        if a.HasField("duration"):
            problem = duration_problem(a.duration, limits.max_job_timeout_ms)
            if problem:
                v.append(FieldViolation(f"{p}.duration", f"{problem} (the job time limit)"))
    elif action == "expect":
        cond = a.WhichOneof("condition")
        if cond is None:
            v.append(FieldViolation(p, "give a condition: visible, hidden, textContains, textEquals, value, "
                                       "count, titleContains or urlContains"))
        elif cond not in ("title_contains", "url_contains"):
            _target(a.target, p, v)
        if cond == "count" and not 0 <= a.count <= MAX_EXPECT_COUNT:
            v.append(FieldViolation(f"{p}.count", f"between 0 and {MAX_EXPECT_COUNT}"))
        elif cond == "url_contains":
            _text(a.url_contains, MAX_URL, f"{p}.url_contains", v)
        elif cond in ("text_contains", "text_equals", "value", "title_contains"):
            _text(getattr(a, cond), MAX_TEXT, f"{p}.{cond}", v)
    elif action == "extract":
        _target(a.target, p, v)
        if not VALUE_KEY.match(a.key):
            v.append(FieldViolation(f"{p}.key", "a key is required: letters, digits, '_', '.', '-' (at most 128)"))
        _text(a.attribute, MAX_ATTRIBUTE, f"{p}.attribute", v)
    elif action == "screenshot":
        if a.target.selector or a.target.fallbacks:
            _target(a.target, p, v)
    elif action == "upload":
        if not a.files:
            v.append(FieldViolation(f"{p}.files", "name at least one file of browser.files"))
        if len(a.files) > MAX_FILES:
            v.append(FieldViolation(f"{p}.files", f"at most {MAX_FILES} files"))
        else:
            for j, name in enumerate(a.files):
                if name not in files:
                    v.append(FieldViolation(f"{p}.files[{j}]", f"{shown(name)} is not among browser.files"))
    return v


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 host
        return False
