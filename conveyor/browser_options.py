"""The bounds of a browser task's session and recording options, in one place: the
gateway validates with `validate_browser_options`, the executor (executor/browser/
storage_sessions.py, recording.py) and the session store use the same constants."""

from __future__ import annotations

import re

from conveyor.errors import FieldViolation
from conveyor.v1 import task_pb2

#: A session's name: what `session.use` / `session.save` / DeleteSession take.
SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SESSION_NAME_RULE = "1-64 characters of letters, digits, '.', '_', '-' (starting with a letter or digit)"
DEFAULT_SESSION_TTL_MS = 24 * 3600 * 1000
MAX_SESSION_TTL_MS = 30 * 24 * 3600 * 1000
#: The largest storage state (its JSON) a session may hold.
MAX_SESSION_BYTES = 1 << 20
#: Live sessions one tenant may have.
MAX_SESSIONS_PER_OWNER = 1000

#: Console messages and page errors kept in a job's result.
MAX_CONSOLE_MESSAGES = 200
MAX_CONSOLE_TEXT = 2000
MAX_PAGE_ERRORS = 50
MAX_PAGE_ERROR_TEXT = 4000

TRACE_MODES = frozenset(task_pb2.TraceMode.values())


def _ttl_ms(options: task_pb2.SessionOptions) -> int:
    return options.ttl.seconds * 1000 + options.ttl.nanos // 1_000_000


def session_ttl_ms(options: task_pb2.SessionOptions) -> int:
    """The time to live of a session saved with these options."""
    return _ttl_ms(options) if options.HasField("ttl") else DEFAULT_SESSION_TTL_MS


def validate_browser_options(task: task_pb2.BrowserTask, path: str) -> list[FieldViolation]:
    """What is wrong with a browser task's `session` and `recording` (field paths under `path`)."""
    v: list[FieldViolation] = []
    s = task.session
    for name in ("use", "save"):
        value = getattr(s, name)
        if value and not SESSION_NAME.match(value):
            v.append(FieldViolation(f"{path}.session.{name}", f"a session name: {SESSION_NAME_RULE}"))
    if s.HasField("ttl"):
        if not s.save:
            v.append(FieldViolation(f"{path}.session.ttl", "only with session.save"))
        elif not 0 < _ttl_ms(s) <= MAX_SESSION_TTL_MS or s.ttl.nanos < 0:
            v.append(FieldViolation(f"{path}.session.ttl", "more than 0 and at most 30 days"))
    if task.recording.trace not in TRACE_MODES:
        v.append(FieldViolation(f"{path}.recording.trace", f"unknown trace mode {task.recording.trace}"))
    return v
