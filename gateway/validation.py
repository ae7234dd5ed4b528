"""Checks a SubmitJobRequest before anything is written, and names every bad field
(in the request's field paths, as BadRequest.FieldViolation wants them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from conveyor.errors import FieldViolation
from conveyor.v1 import job_pb2, job_service_pb2, task_pb2
from gateway.mapping import duration_ms

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
VALUE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
WAIT_UNTIL = {"", "load", "domcontentloaded", "networkidle", "commit"}
LOAD_STATES = {"load", "domcontentloaded", "networkidle"}
ELEMENT_STATES = {"", "visible", "hidden", "attached", "detached"}
BUTTONS = {"", "left", "right", "middle"}
MAX_ATTEMPTS = 100
MAX_LABELS = 64
MAX_REQUEST_ID = 128
MAX_TEXT = 100_000
MAX_DEPENDENCIES = 100
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TARGETED = ("click", "fill", "type", "clear", "press", "hover", "select", "check", "uncheck", "upload")


@dataclass(frozen=True)
class Limits:
    max_steps: int
    max_file_bytes: int
    max_request_bytes: int
    max_job_timeout_ms: int


def validate_submit(req: job_service_pb2.SubmitJobRequest, limits: Limits, prefix: str = "") -> list[FieldViolation]:
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(prefix + field, description))

    if req.queue and not QUEUE_NAME.match(req.queue):
        bad("queue", "letters, digits, '.', '_' and '-' only, at most 64, starting with a letter or digit")
    if req.priority not in job_pb2.Priority.values():
        bad("priority", f"unknown priority {req.priority}")
    if not 0 <= req.max_attempts <= MAX_ATTEMPTS:
        bad("max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 for the default)")
    if req.HasField("timeout"):
        ms = duration_ms(req.timeout)
        if ms <= 0 or ms > limits.max_job_timeout_ms:
            bad("timeout", f"must be positive and at most {limits.max_job_timeout_ms / 1000:g}s")
    if req.HasField("delay") and req.HasField("run_at"):
        bad("run_at", "give either delay or run_at, not both")
    if req.HasField("delay") and duration_ms(req.delay) < 0:
        bad("delay", "must not be negative")
    if len(req.request_id) > MAX_REQUEST_ID:
        bad("request_id", f"at most {MAX_REQUEST_ID} characters")
    if len(req.labels) > MAX_LABELS:
        bad("labels", f"at most {MAX_LABELS} labels")
    for key in req.labels:
        if not key or len(key) > 63:
            bad(f"labels[{key!r}]", "label keys are 1 to 63 characters")

    if req.dedup_key and len(req.dedup_key) > MAX_REQUEST_ID:
        bad("dedup_key", f"at most {MAX_REQUEST_ID} characters")
    if req.HasField("dedup_window") and not req.dedup_key:
        bad("dedup_window", "needs a dedup_key")
    if req.HasField("dedup_window") and duration_ms(req.dedup_window) < 0:
        bad("dedup_window", "must not be negative")
    if len(req.depends_on) > MAX_DEPENDENCIES:
        bad("depends_on", f"at most {MAX_DEPENDENCIES} jobs")
    for i, dep in enumerate(req.depends_on):
        if not JOB_ID.match(dep):
            bad(f"depends_on[{i}]", "a job id")

    kind = req.WhichOneof("task")
    if kind is None:
        bad("task", "a task is required: browser or noop")
    elif kind == "noop":
        if req.noop.HasField("sleep") and not 0 <= duration_ms(req.noop.sleep) <= limits.max_job_timeout_ms:
            bad("noop.sleep", "must be between 0 and the job time limit")
        if req.noop.fail_first_attempts < 0:
            bad("noop.fail_first_attempts", "must not be negative")
    else:
        v += _validate_browser(req.browser, limits, prefix + "browser")
    if not v and req.ByteSize() > limits.max_request_bytes:
        field = "browser.files" if kind == "browser" and req.browser.files else (kind or "task")
        bad(field, f"the request is {req.ByteSize()} bytes; at most {limits.max_request_bytes}")
    return v


def _validate_browser(task: task_pb2.BrowserTask, limits: Limits, path: str) -> list[FieldViolation]:
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(f"{path}.{field}", description))

    names: set[str] = set()
    total = 0
    for i, f in enumerate(task.files):
        if not FILE_NAME.match(f.name):
            bad(f"files[{i}].name", "a plain file name (letters, digits, '.', '_', '-', ' ')")
        if f.name in names:
            bad(f"files[{i}].name", f"duplicate file name {f.name!r}")
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
    return v


def _target(t: task_pb2.Target, path: str, v: list[FieldViolation], required: bool = True) -> None:
    if required and not t.selector:
        v.append(FieldViolation(f"{path}.target.selector", "a selector is required"))
    for j, fb in enumerate(t.fallbacks):
        if not fb:
            v.append(FieldViolation(f"{path}.target.fallbacks[{j}]", "must not be empty"))


def _validate_step(step: task_pb2.Step, files: set[str], limits: Limits, path: str) -> list[FieldViolation]:
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(f"{path}.{field}", description))

    if step.HasField("timeout"):
        ms = duration_ms(step.timeout)
        if ms <= 0 or ms > limits.max_job_timeout_ms:
            bad("timeout", "must be positive and at most the job time limit")
    action = step.WhichOneof("action")
    if action is None:
        v.append(FieldViolation(path, "a step needs exactly one action (navigate, click, fill, ...)"))
        return v
    a = getattr(step, action)
    p = f"{path}.{action}"
    if action in TARGETED:
        _target(a.target, p, v)
    if action == "navigate":
        url = urlsplit(a.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            v.append(FieldViolation(f"{p}.url", f"only http and https URLs with a host are allowed, got {a.url!r}"))
        if a.wait_until not in WAIT_UNTIL:
            v.append(FieldViolation(f"{p}.wait_until", f"one of {sorted(WAIT_UNTIL - {''})}"))
    elif action == "click":
        if a.button not in BUTTONS:
            v.append(FieldViolation(f"{p}.button", "left, right or middle"))
        if not 0 <= a.click_count <= 3:
            v.append(FieldViolation(f"{p}.click_count", "between 1 and 3"))
    elif action in ("fill", "type"):
        if len(a.text) > MAX_TEXT:
            v.append(FieldViolation(f"{p}.text", f"at most {MAX_TEXT} characters"))
    elif action == "press":
        if not a.key:
            v.append(FieldViolation(f"{p}.key", "a key is required, e.g. 'Enter'"))
    elif action == "select":
        if not a.values and not a.labels:
            v.append(FieldViolation(f"{p}.values", "give values or labels"))
    elif action == "scroll":
        if not a.target.selector and not (a.dx or a.dy):
            v.append(FieldViolation(f"{p}.target", "give a target to scroll into view, or dx/dy"))
        _target(a.target, p, v, required=False)
    elif action == "wait":
        given = [bool(a.target.selector), a.HasField("duration"), bool(a.url_contains), bool(a.load_state)]
        if sum(given) != 1:
            v.append(FieldViolation(p, "give exactly one of target, duration, url_contains, load_state"))
        if a.state not in ELEMENT_STATES:
            v.append(FieldViolation(f"{p}.state", f"one of {sorted(ELEMENT_STATES - {''})}"))
        if a.load_state and a.load_state not in LOAD_STATES:
            v.append(FieldViolation(f"{p}.load_state", f"one of {sorted(LOAD_STATES)}"))
        if a.HasField("duration") and not 0 <= duration_ms(a.duration) <= limits.max_job_timeout_ms:
            v.append(FieldViolation(f"{p}.duration", "between 0 and the job time limit"))
    elif action == "expect":
        cond = a.WhichOneof("condition")
        if cond is None:
            v.append(FieldViolation(p, "give a condition: visible, hidden, textContains, textEquals, value, "
                                       "count, titleContains or urlContains"))
        elif cond not in ("title_contains", "url_contains"):
            _target(a.target, p, v)
    elif action == "extract":
        _target(a.target, p, v)
        if not VALUE_KEY.match(a.key):
            v.append(FieldViolation(f"{p}.key", "a key is required: letters, digits, '_', '.', '-'"))
    elif action == "screenshot":
        if a.target.selector or a.target.fallbacks:
            _target(a.target, p, v)
    elif action == "upload":
        if not a.files:
            v.append(FieldViolation(f"{p}.files", "name at least one file of browser.files"))
        for j, name in enumerate(a.files):
            if name not in files:
                v.append(FieldViolation(f"{p}.files[{j}]", f"{name!r} is not among browser.files"))
    return v
