"""Checks requests before anything is written, and names every bad field (in the
request's field paths, as BadRequest.FieldViolation wants them).

Every bound of the API is a named constant here (the README's table lists them);
the servicers and validate_submit use them, nothing else restates them. A
description never carries more than a short prefix of what the caller sent
(`shown`), and a refusal carries at most MAX_VIOLATIONS violations (`capped`)."""

from __future__ import annotations

import math
import re
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from conveyor.browser_options import validate_browser_options
from conveyor.browser_steps import (
    ARIA_ROLES,
    ASSERTIONS,
    ATTRIBUTE_NAME,
    BUTTONS,
    COLOR_SCHEMES,
    CSS_PROPERTY,
    DEFAULT_TEST_ID_ATTRIBUTE,
    DIALOG_ACTIONS,
    ELEMENT_STATES,
    HEADER_NAME,
    LOAD_STATES,
    LOCALE,
    MAX_ATTRIBUTE,
    MAX_CONTENT_TYPE,
    MAX_COOKIE_VALUE,
    MAX_COOKIES,
    MAX_COORDINATE,
    MAX_EVENT_TYPE,
    MAX_EXPECT_COUNT,
    MAX_EXPECTED_ITEMS,
    MAX_EXPRESSION,
    MAX_FALLBACKS,
    MAX_FILES,
    MAX_FILTERS,
    MAX_FRAMES,
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_HEADING_LEVEL,
    MAX_JSON_BYTES,
    MAX_KEY,
    MAX_KEY_DELAY_MS,
    MAX_LOCALE,
    MAX_LOCATOR_DEPTH,
    MAX_MOUSE_STEPS,
    MAX_NTH,
    MAX_OPTION,
    MAX_OPTIONS,
    MAX_PAGE_INDEX,
    MAX_POLLING_MS,
    MAX_SCROLL_PX,
    MAX_SELECTOR,
    MAX_STEP_NAME,
    MAX_TEXT,
    MAX_URL,
    MAX_USER_AGENT,
    MAX_VIEWPORT_PX,
    MIN_POLLING_MS,
    REDUCED_MOTION,
    SAME_SITE,
    SOFT_STEPS,
    TARGETED,
    VALUE_KEY,
    WAIT_UNTIL,
    devices,
)
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
#: Artifact names are made by the executor; the artifact store takes at most this many characters.
MAX_ARTIFACT_NAME = 200
MAX_PAGE_TOKEN = 512

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

# ---- a browser task: the bounds and enums of conveyor/browser_steps.py (the step catalog) ----

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


#: The enums' known numbers, read once (`Enum.values()` builds a list on every call).
_PRIORITIES = frozenset(job_pb2.Priority.values())
_BACKOFFS = frozenset(task_pb2.Backoff.values())


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
    if req.priority not in _PRIORITIES:
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
    for field, problem in label_problems(req.labels):
        bad(field, problem)

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
        if req.retry.backoff not in _BACKOFFS:
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
    v += validate_browser_options(task, path)  # session, recording (conveyor/browser_options.py)
    attr = task.context.test_id_attribute or DEFAULT_TEST_ID_ATTRIBUTE
    if task.HasField("context"):
        v += _validate_context(task.context, f"{path}.context")

    if not task.steps:
        bad("steps", "at least one step is required")
    if len(task.steps) > limits.max_steps:
        bad("steps", f"{len(task.steps)} steps; at most {limits.max_steps}")
        return v
    for i, step in enumerate(task.steps):
        v += _validate_step(step, names, limits, f"{path}.steps[{i}]", attr)
        if len(v) > MAX_VIOLATIONS:
            break  # capped anyway: no need to look further
    return v


def _target(
    t: task_pb2.Target, path: str, v: list[FieldViolation], required: bool = True, name: str = "target",
    attr: str = DEFAULT_TEST_ID_ATTRIBUTE,
) -> None:
    p = f"{path}.{name}"
    if t.HasField("locator"):
        if t.selector or t.fallbacks:
            v.append(FieldViolation(f"{p}.locator", "give a selector (with fallbacks) or a locator, not both"))
        _locator(t.locator, f"{p}.locator", v, 1, attr)
        return
    if required and not t.selector:
        v.append(FieldViolation(f"{p}.selector", "a selector or a locator is required"))
    if len(t.selector) > MAX_SELECTOR:
        v.append(FieldViolation(f"{p}.selector", f"at most {MAX_SELECTOR} characters"))
    if len(t.fallbacks) > MAX_FALLBACKS:
        v.append(FieldViolation(f"{p}.fallbacks", f"at most {MAX_FALLBACKS} fallbacks"))
        return
    for j, fb in enumerate(t.fallbacks):
        if not fb or len(fb) > MAX_SELECTOR:
            v.append(FieldViolation(f"{p}.fallbacks[{j}]", f"a selector of 1 to {MAX_SELECTOR} characters"))


def _has_target(t: task_pb2.Target) -> bool:
    return bool(t.selector or t.fallbacks or t.HasField("locator"))


def _regex(value: str, field: str, v: list[FieldViolation]) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        v.append(FieldViolation(field, f"not a valid regular expression: {exc}"))


_PICKERS = "role, text, label, placeholder, altText, title, testId, css or xpath"
_ROLE_ONLY = ("name", "level", "include_hidden", "checked", "disabled", "expanded", "pressed", "selected")


def _locator(loc: task_pb2.Locator, path: str, v: list[FieldViolation], depth: int, attr: str) -> None:
    if depth > MAX_LOCATOR_DEPTH:
        v.append(FieldViolation(path, f"locators nest at most {MAX_LOCATOR_DEPTH} deep"))
        return
    by = loc.WhichOneof("by")
    if by is None:
        v.append(FieldViolation(path, f"a locator needs one of {_PICKERS}"))
    else:
        value: str = getattr(loc, by)
        field = f"{path}.{by}"
        limit = MAX_SELECTOR if by in ("css", "xpath") else MAX_TEXT
        if by == "role":
            if value not in ARIA_ROLES:
                v.append(FieldViolation(field, f"{shown(value)} is not an ARIA role (button, link, heading, "
                                               "textbox, checkbox, listitem...)"))
        elif not value and by in ("css", "xpath", "test_id"):
            v.append(FieldViolation(field, "must not be empty"))
        elif len(value) > limit:
            v.append(FieldViolation(field, f"at most {limit} characters"))
        elif loc.regex and by not in ("css", "xpath"):
            _regex(value, field, v)
        if by in ("css", "xpath") and (loc.regex or loc.exact or loc.ignore_case):
            v.append(FieldViolation(f"{path}.regex", f"regex, exact and ignoreCase do not apply to {by}"))
        if by == "test_id" and loc.regex and attr != DEFAULT_TEST_ID_ATTRIBUTE:
            v.append(FieldViolation(f"{path}.regex", "a regex testId needs the default test id attribute"))
        if by != "role":
            for option in _ROLE_ONLY:
                if (loc.HasField(option) if option in ("checked", "disabled", "expanded", "pressed", "selected")  # type: ignore[arg-type]
                        else getattr(loc, option)):
                    v.append(FieldViolation(f"{path}.{option}", "applies to role locators only"))
    if len(loc.name) > MAX_TEXT:
        v.append(FieldViolation(f"{path}.name", f"at most {MAX_TEXT} characters"))
    elif loc.name and loc.regex:
        _regex(loc.name, f"{path}.name", v)
    if loc.ignore_case and not loc.regex:
        v.append(FieldViolation(f"{path}.ignore_case", "applies with regex (plain text already ignores case "
                                                       "unless exact)"))
    if not 0 <= loc.level <= MAX_HEADING_LEVEL:
        v.append(FieldViolation(f"{path}.level", f"between 1 and {MAX_HEADING_LEVEL}"))
    if sum([loc.HasField("nth"), loc.first, loc.last]) > 1:
        v.append(FieldViolation(f"{path}.nth", "give one of nth, first, last"))
    if abs(loc.nth) > MAX_NTH:
        v.append(FieldViolation(f"{path}.nth", f"between -{MAX_NTH} and {MAX_NTH}"))
    if len(loc.filters) > MAX_FILTERS:
        v.append(FieldViolation(f"{path}.filters", f"at most {MAX_FILTERS} filters"))
    else:
        for j, f in enumerate(loc.filters):
            fp = f"{path}.filters[{j}]"
            if not (f.has_text or f.has_not_text or f.HasField("has") or f.HasField("has_not")
                    or f.HasField("visible")):
                v.append(FieldViolation(fp, "give hasText, hasNotText, has, hasNot or visible"))
            for name in ("has_text", "has_not_text"):
                text: str = getattr(f, name)
                if len(text) > MAX_TEXT:
                    v.append(FieldViolation(f"{fp}.{name}", f"at most {MAX_TEXT} characters"))
                elif text and f.regex:
                    _regex(text, f"{fp}.{name}", v)
            if f.ignore_case and not f.regex:
                v.append(FieldViolation(f"{fp}.ignore_case", "applies with regex"))
            if f.HasField("has"):
                _locator(f.has, f"{fp}.has", v, depth + 1, attr)
            if f.HasField("has_not"):
                _locator(f.has_not, f"{fp}.has_not", v, depth + 1, attr)
    if loc.HasField("within"):
        _locator(loc.within, f"{path}.within", v, depth + 1, attr)
    if len(loc.frames) > MAX_FRAMES:
        v.append(FieldViolation(f"{path}.frames", f"at most {MAX_FRAMES} frames"))
    else:
        for j, frame in enumerate(loc.frames):
            _locator(frame, f"{path}.frames[{j}]", v, depth + 1, attr)


def _pattern(p: task_pb2.Pattern, field: str, v: list[FieldViolation]) -> None:
    if len(p.value) > MAX_TEXT:
        v.append(FieldViolation(f"{field}.value", f"at most {MAX_TEXT} characters"))
    elif p.regex:
        _regex(p.value, f"{field}.value", v)


def _texts(values: list[str], regex: bool, field: str, v: list[FieldViolation]) -> None:
    if len(values) > MAX_EXPECTED_ITEMS:
        v.append(FieldViolation(field, f"at most {MAX_EXPECTED_ITEMS} values"))
        return
    for j, value in enumerate(values):
        if len(value) > MAX_TEXT:
            v.append(FieldViolation(f"{field}[{j}]", f"at most {MAX_TEXT} characters"))
        elif regex:
            _regex(value, f"{field}[{j}]", v)


def _json_size(value: struct_pb2.Value | struct_pb2.Struct, field: str, v: list[FieldViolation]) -> None:
    if value.ByteSize() > MAX_JSON_BYTES:
        v.append(FieldViolation(field, f"at most {MAX_JSON_BYTES} bytes of JSON"))


def _expression(value: str, field: str, v: list[FieldViolation]) -> None:
    if not value.strip():
        v.append(FieldViolation(field, "a JavaScript expression or function is required"))
    elif len(value) > MAX_EXPRESSION:
        v.append(FieldViolation(field, f"at most {MAX_EXPRESSION} characters"))


def _one_of(value: str, allowed: tuple[str, ...], field: str, v: list[FieldViolation]) -> None:
    if value and value not in allowed:
        v.append(FieldViolation(field, f"one of {', '.join(allowed)}"))


def _validate_context(c: task_pb2.BrowserContextOptions, path: str) -> list[FieldViolation]:
    v: list[FieldViolation] = []
    if c.HasField("viewport"):
        for name in ("width", "height"):
            if not 1 <= getattr(c.viewport, name) <= MAX_VIEWPORT_PX:
                v.append(FieldViolation(f"{path}.viewport.{name}", f"between 1 and {MAX_VIEWPORT_PX} pixels"))
    if c.device and c.device not in devices():
        v.append(FieldViolation(f"{path}.device", f"{shown(c.device)} is not a device of Playwright's list "
                                                  "(e.g. 'iPhone 13', 'Pixel 7', 'Desktop Chrome')"))
    _text(c.user_agent, MAX_USER_AGENT, f"{path}.user_agent", v)
    if c.locale and (len(c.locale) > MAX_LOCALE or not LOCALE.match(c.locale)):
        v.append(FieldViolation(f"{path}.locale", "a BCP 47 language tag such as 'en-US' or 'de-DE'"))
    if c.timezone_id and not _time_zone(c.timezone_id):
        v.append(FieldViolation(f"{path}.timezone_id", "an IANA time zone such as 'Europe/Berlin'"))
    _one_of(c.color_scheme, COLOR_SCHEMES, f"{path}.color_scheme", v)
    _one_of(c.reduced_motion, REDUCED_MOTION, f"{path}.reduced_motion", v)
    if len(c.extra_http_headers) > MAX_HEADERS:
        v.append(FieldViolation(f"{path}.extra_http_headers", f"at most {MAX_HEADERS} headers"))
    else:
        for key, value in c.extra_http_headers.items():
            field = f"{path}.extra_http_headers[{shown(key)}]"
            if len(key) > MAX_HEADER_NAME or not HEADER_NAME.match(key):
                v.append(FieldViolation(field, f"a header name (token characters, at most {MAX_HEADER_NAME})"))
            elif len(value) > MAX_HEADER_VALUE or "\r" in value or "\n" in value:
                v.append(FieldViolation(field, f"a header value of at most {MAX_HEADER_VALUE} characters, one line"))
    if len(c.cookies) > MAX_COOKIES:
        v.append(FieldViolation(f"{path}.cookies", f"at most {MAX_COOKIES} cookies"))
    else:
        for j, cookie in enumerate(c.cookies):
            cp = f"{path}.cookies[{j}]"
            if not cookie.name or len(cookie.name) > MAX_HEADER_NAME or not HEADER_NAME.match(cookie.name):
                v.append(FieldViolation(f"{cp}.name", "a cookie name (token characters) is required"))
            if len(cookie.value) > MAX_COOKIE_VALUE or any(ch in cookie.value for ch in ";\r\n"):
                v.append(FieldViolation(f"{cp}.value", f"at most {MAX_COOKIE_VALUE} characters, no ';' or line breaks"))
            if cookie.url:
                if cookie.domain or cookie.path:
                    v.append(FieldViolation(f"{cp}.url", "give a url, or a domain and a path, not both"))
                elif len(cookie.url) > MAX_URL or not _http_url(cookie.url):
                    v.append(FieldViolation(f"{cp}.url", "an http or https URL with a host"))
            elif not cookie.domain or not cookie.path.startswith("/"):
                v.append(FieldViolation(f"{cp}.domain", "give a url, or a domain and a path starting with '/'"))
            elif len(cookie.domain) > MAX_URL or len(cookie.path) > MAX_URL:
                v.append(FieldViolation(f"{cp}.domain", f"domain and path at most {MAX_URL} characters"))
            _one_of(cookie.same_site, SAME_SITE, f"{cp}.same_site", v)
            if cookie.expires < 0:
                v.append(FieldViolation(f"{cp}.expires", "unix seconds (0 or unset: a session cookie)"))
    if c.test_id_attribute and (len(c.test_id_attribute) > MAX_ATTRIBUTE
                                or not ATTRIBUTE_NAME.match(c.test_id_attribute)):
        v.append(FieldViolation(f"{path}.test_id_attribute", "an attribute name such as 'data-test'"))
    return v


def _time_zone(name: str) -> bool:
    if len(name) > MAX_TIME_ZONE or name.startswith("/") or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _text(value: str, limit: int, field: str, v: list[FieldViolation]) -> None:
    if len(value) > limit:
        v.append(FieldViolation(field, f"at most {limit} characters"))


def _validate_step(
    step: task_pb2.Step, files: set[str], limits: Limits, path: str, attr: str = DEFAULT_TEST_ID_ATTRIBUTE
) -> list[FieldViolation]:
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
    if step.soft and (action not in SOFT_STEPS or (action == "evaluate" and not step.evaluate.HasField("expected"))):
        bad("soft", "only checks can be soft: expect, or evaluate with expected")
    a = getattr(step, action)
    p = f"{path}.{action}"

    def target(t: task_pb2.Target, required: bool = True, name: str = "target") -> None:
        _target(t, p, v, required, name, attr)

    if action in TARGETED:
        target(a.target)
    if action == "navigate":
        if len(a.url) > MAX_URL:
            v.append(FieldViolation(f"{p}.url", f"at most {MAX_URL} characters"))
        elif not _http_url(a.url):
            v.append(FieldViolation(f"{p}.url", f"only http and https URLs with a host, got {shown(a.url)}"))
        _one_of(a.wait_until, WAIT_UNTIL, f"{p}.wait_until", v)
    elif action == "click":
        _one_of(a.button, BUTTONS, f"{p}.button", v)
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
        if not _has_target(a.target) and not (a.dx or a.dy):
            v.append(FieldViolation(f"{p}.target", "give a target to scroll into view, or dx/dy"))
        target(a.target, required=False)
        for field in ("dx", "dy"):
            if abs(getattr(a, field)) > MAX_SCROLL_PX:
                v.append(FieldViolation(f"{p}.{field}", f"between -{MAX_SCROLL_PX} and {MAX_SCROLL_PX} pixels"))
    elif action == "wait":
        given = [_has_target(a.target), a.HasField("duration"), bool(a.url_contains), bool(a.load_state)]
        if sum(given) != 1:
            v.append(FieldViolation(p, "give exactly one of target, duration, url_contains, load_state"))
        target(a.target, required=False)
        _one_of(a.state, ELEMENT_STATES, f"{p}.state", v)
        _one_of(a.load_state, LOAD_STATES, f"{p}.load_state", v)
        _text(a.url_contains, MAX_URL, f"{p}.url_contains", v)
        if a.HasField("duration"):
            problem = duration_problem(a.duration, limits.max_job_timeout_ms)
            if problem:
                v.append(FieldViolation(f"{p}.duration", f"{problem} (the job time limit)"))
    elif action == "expect":
        _validate_expect(a, p, v, target)
    elif action == "extract":
        target(a.target)
        if not VALUE_KEY.match(a.key):
            v.append(FieldViolation(f"{p}.key", "a key is required: letters, digits, '_', '.', '-' (at most 128)"))
        _text(a.attribute, MAX_ATTRIBUTE, f"{p}.attribute", v)
    elif action == "screenshot":
        if _has_target(a.target):
            target(a.target)
    elif action == "upload":
        if not a.files:
            v.append(FieldViolation(f"{p}.files", "name at least one file of browser.files"))
        if len(a.files) > MAX_FILES:
            v.append(FieldViolation(f"{p}.files", f"at most {MAX_FILES} files"))
        else:
            for j, name in enumerate(a.files):
                if name not in files:
                    v.append(FieldViolation(f"{p}.files[{j}]", f"{shown(name)} is not among browser.files"))
    elif action == "evaluate":
        _expression(a.expression, f"{p}.expression", v)
        if a.HasField("arg"):
            _json_size(a.arg, f"{p}.arg", v)
        if a.HasField("expected"):
            _json_size(a.expected, f"{p}.expected", v)
        if a.key and not VALUE_KEY.match(a.key):
            v.append(FieldViolation(f"{p}.key", "letters, digits, '_', '.', '-' (at most 128), starting with a letter"))
        if _has_target(a.target):
            target(a.target)
    elif action == "wait_for_function":
        _expression(a.expression, f"{p}.expression", v)
        if a.HasField("arg"):
            _json_size(a.arg, f"{p}.arg", v)
        if a.HasField("polling"):
            problem = duration_problem(a.polling, MAX_POLLING_MS, positive=True)
            if problem or duration_ms(a.polling) < MIN_POLLING_MS:
                v.append(FieldViolation(f"{p}.polling", f"between {MIN_POLLING_MS} ms and {MAX_POLLING_MS // 1000} s"))
    elif action in ("go_back", "go_forward", "reload"):
        _one_of(a.wait_until, WAIT_UNTIL, f"{p}.wait_until", v)
    elif action == "dispatch_event":
        if not a.type or len(a.type) > MAX_EVENT_TYPE:
            v.append(FieldViolation(f"{p}.type", f"an event type of 1 to {MAX_EVENT_TYPE} characters, e.g. 'click'"))
        if a.HasField("event_init"):
            _json_size(a.event_init, f"{p}.event_init", v)
    elif action == "drag":
        target(a.source, name="source")
        target(a.target)
    elif action == "keyboard":
        _validate_keyboard(a, p, v)
    elif action == "mouse":
        _validate_mouse(a, p, v)
    elif action == "dialog":
        _one_of(a.action, DIALOG_ACTIONS, f"{p}.action", v)
        _text(a.prompt_text, MAX_TEXT, f"{p}.prompt_text", v)
        if a.prompt_text and a.action == "dismiss":
            v.append(FieldViolation(f"{p}.prompt_text", "a prompt is answered with accept"))
        if a.key and not VALUE_KEY.match(a.key):
            v.append(FieldViolation(f"{p}.key", "letters, digits, '_', '.', '-' (at most 128), starting with a letter"))
    elif action == "switch_page":
        to = a.WhichOneof("to")
        if to is None:
            v.append(FieldViolation(p, "give new, index or url_contains"))
        elif to == "index" and not 0 <= a.index <= MAX_PAGE_INDEX:
            v.append(FieldViolation(f"{p}.index", f"between 0 and {MAX_PAGE_INDEX}"))
        elif to == "url_contains" and not 1 <= len(a.url_contains) <= MAX_URL:
            v.append(FieldViolation(f"{p}.url_contains", f"1 to {MAX_URL} characters"))
        elif to == "new" and not a.new:
            v.append(FieldViolation(f"{p}.new", "true (the newest page not switched to yet)"))
    return v


def _validate_expect(
    a: task_pb2.ExpectAction, p: str, v: list[FieldViolation], target: Callable[[task_pb2.Target], None]
) -> None:
    cond = a.WhichOneof("condition")
    if cond is None:
        names = ", ".join(e.name for e in ASSERTIONS if e.field not in ("negate", "soft"))
        v.append(FieldViolation(p, f"give a condition: {names}"))
        return
    if cond not in ("title_contains", "url_contains", "url", "title"):
        target(a.target)
    c = f"{p}.{cond}"
    if cond == "count" and not 0 <= a.count <= MAX_EXPECT_COUNT:
        v.append(FieldViolation(c, f"between 0 and {MAX_EXPECT_COUNT}"))
    elif cond == "url_contains":
        _text(a.url_contains, MAX_URL, c, v)
    elif cond in ("text_contains", "text_equals", "value", "title_contains"):
        _text(getattr(a, cond), MAX_TEXT, c, v)
    elif cond == "text":
        if a.text.value and a.text.values:
            v.append(FieldViolation(f"{c}.values", "give value or values, not both"))
        if not a.text.values:
            _texts([a.text.value], a.text.regex, f"{c}.value", v)
        _texts(list(a.text.values), a.text.regex, f"{c}.values", v)
    elif cond in ("input_value", "url", "title"):
        _pattern(getattr(a, cond), c, v)
    elif cond == "input_values":
        _texts(list(a.input_values.values), a.input_values.regex, f"{c}.values", v)
    elif cond == "attribute":
        if not a.attribute.name or len(a.attribute.name) > MAX_ATTRIBUTE or not ATTRIBUTE_NAME.match(a.attribute.name):
            v.append(FieldViolation(f"{c}.name", "an attribute name is required, e.g. 'href'"))
        if a.attribute.HasField("value"):
            _pattern(a.attribute.value, f"{c}.value", v)
    elif cond == "class_name":
        k = a.class_name
        if k.value and k.values:
            v.append(FieldViolation(f"{c}.values", "give value or values, not both"))
        if k.contains and k.regex:
            v.append(FieldViolation(f"{c}.regex", "toContainClass takes class names, not a regex"))
        if not k.values:
            _texts([k.value], k.regex, f"{c}.value", v)
        _texts(list(k.values), k.regex, f"{c}.values", v)
    elif cond == "css":
        if not a.css.name or len(a.css.name) > MAX_ATTRIBUTE or not CSS_PROPERTY.match(a.css.name):
            v.append(FieldViolation(f"{c}.name", "a CSS property name is required, e.g. 'color'"))
        if not a.css.HasField("value"):
            v.append(FieldViolation(f"{c}.value", "the expected value is required"))
        else:
            _pattern(a.css.value, f"{c}.value", v)


def _validate_keyboard(a: task_pb2.KeyboardAction, p: str, v: list[FieldViolation]) -> None:
    op = a.WhichOneof("op")
    if op is None:
        v.append(FieldViolation(p, "give press, type, down, up or insert_text"))
    elif op in ("press", "down", "up"):
        key: str = getattr(a, op)
        if not key or len(key) > MAX_KEY:
            v.append(FieldViolation(f"{p}.{op}", f"a key of 1 to {MAX_KEY} characters, e.g. 'Enter'"))
    else:
        _text(getattr(a, op), MAX_TEXT, f"{p}.{op}", v)
    if a.HasField("delay"):
        problem = duration_problem(a.delay, MAX_KEY_DELAY_MS)
        if problem:
            v.append(FieldViolation(f"{p}.delay", f"{problem} (per key)"))


def _validate_mouse(a: task_pb2.MouseAction, p: str, v: list[FieldViolation]) -> None:
    op = a.WhichOneof("op")
    if op is None:
        v.append(FieldViolation(p, "give move, click, down, up or wheel"))
        return
    m = getattr(a, op)
    q = f"{p}.{op}"
    if op in ("move", "click"):
        for axis in ("x", "y"):
            value = getattr(m, axis)
            if not (math.isfinite(value) and 0 <= value <= MAX_COORDINATE):
                v.append(FieldViolation(f"{q}.{axis}", f"between 0 and {MAX_COORDINATE} CSS pixels"))
    if op == "move" and not 0 <= m.steps <= MAX_MOUSE_STEPS:
        v.append(FieldViolation(f"{q}.steps", f"between 1 and {MAX_MOUSE_STEPS}"))
    if op in ("click", "down", "up"):
        _one_of(m.button, BUTTONS, f"{q}.button", v)
    if op == "click" and not 0 <= m.click_count <= 3:
        v.append(FieldViolation(f"{q}.click_count", "between 1 and 3"))
    if op == "wheel":
        for axis in ("dx", "dy"):
            value = getattr(m, axis)
            if not (math.isfinite(value) and abs(value) <= MAX_SCROLL_PX):
                v.append(FieldViolation(f"{q}.{axis}", f"between -{MAX_SCROLL_PX} and {MAX_SCROLL_PX} pixels"))


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 host
        return False


def label_problems(labels: Mapping[str, str], field: str = "labels") -> list[tuple[str, str]]:
    """What is wrong with a set of labels (of a job, or of a ListJobs filter): (field, problem) pairs."""
    if len(labels) > MAX_LABELS:
        return [(field, f"at most {MAX_LABELS} labels")]
    found = []
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY:
            found.append((f"{field}[{shown(key)}]", f"label keys are 1 to {MAX_LABEL_KEY} characters"))
        elif len(value) > MAX_LABEL_VALUE:
            found.append((f"{field}[{shown(key)}]", f"label values are at most {MAX_LABEL_VALUE} characters"))
    return found


def check_label_filter(labels: Mapping[str, str]) -> dict[str, str]:
    """ListJobs' `labels`, or INVALID_ARGUMENT naming each bad one."""
    found = label_problems(labels)
    if found:
        raise InvalidArgument([FieldViolation(field, problem) for field, problem in found])
    return dict(labels)
