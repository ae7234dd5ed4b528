"""How a step fails: `StepFailure` says why in the step's own terms (the runner turns
it into a JobError naming the step), and `classify_playwright_error` reads the errors
Playwright raises."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from google.rpc import code_pb2
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.kinds.errors import JobError

# Substrings of Playwright's messages for a selector it cannot parse.
_INVALID_SELECTOR_MARKS = (
    "while parsing selector",
    "while parsing css selector",
    "Unknown engine",
    "InvalidSelectorError",
    "is not a valid selector",
    "is not a valid XPath expression",
    "Unexpected token",
)
_CLOSED_MARKS = (
    "Target page, context or browser has been closed",
    "Target closed",
    "Browser has been closed",
    "browser has disconnected",
    "Browser closed",
    "Page crashed",
    "Connection closed",
)
_NET_ERROR = "net::ERR_"
# Chromium's errors for a name that did not resolve (ours: the route handler aborts
# such a request with `namenotresolved`).
_NAME_NOT_RESOLVED_MARKS = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_NAME_RESOLUTION_FAILED")
_AT_URL = re.compile(r" at (\S+)")
_STRICT = re.compile(r"strict mode violation: .* resolved to (\d+) elements")


class StepFailure(Exception):
    """A step that failed: a stable reason, a sentence saying why, and whether
    trying the job again may help."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        code: int,
        retryable: bool,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.code = code
        self.retryable = retryable
        self.metadata = dict(metadata or {})


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def invalid_step(detail: str) -> StepFailure:
    return StepFailure("INVALID_STEP", detail, code=code_pb2.INVALID_ARGUMENT, retryable=False)


def invalid_selector(selector: str, detail: str) -> StepFailure:
    return StepFailure(
        "INVALID_SELECTOR",
        f"invalid selector {selector!r}: {detail}",
        code=code_pb2.INVALID_ARGUMENT,
        retryable=False,
        metadata={"selector": selector},
    )


def element_not_found(selectors: list[str], timeout_s: float) -> StepFailure:
    tried = ", ".join(repr(s) for s in selectors)
    return StepFailure(
        "ELEMENT_NOT_FOUND",
        f"no element matched {tried} within {timeout_s:g}s",
        code=code_pb2.NOT_FOUND,
        retryable=True,
    )


def locator_not_found(described: str, timeout_s: float) -> StepFailure:
    return StepFailure(
        "ELEMENT_NOT_FOUND",
        f"no element matched {described} within {timeout_s:g}s",
        code=code_pb2.NOT_FOUND,
        retryable=True,
        metadata={"locator": described[:500]},
    )


def strict_mode_violation(described: str, count: int) -> StepFailure:
    """A locator that matched several elements where one was needed (Playwright's
    strictness): the locator should say which (nth, first, last, a filter)."""
    return StepFailure(
        "STRICT_MODE_VIOLATION",
        f"strict mode violation: {described} matched {count} elements, the step needs exactly one "
        "(narrow it with a filter, nth, first or last)",
        code=code_pb2.FAILED_PRECONDITION,
        retryable=False,
        metadata={"locator": described[:500], "count": str(count)},
    )


def step_timeout(timeout_s: float, detail: str) -> StepFailure:
    return StepFailure(
        "STEP_TIMEOUT",
        f"timed out after {timeout_s:g}s: {detail}",
        code=code_pb2.DEADLINE_EXCEEDED,
        retryable=True,
    )


def expectation_failed(expected: str, actual: str) -> StepFailure:
    return StepFailure(
        "EXPECTATION_FAILED",
        f"expectation not met: expected {expected}, actual {actual}",
        code=code_pb2.FAILED_PRECONDITION,
        retryable=True,
        metadata={"expected": expected[:500], "actual": actual[:500]},
    )


def host_not_resolved(host: str, detail: str, url: str = "") -> StepFailure:
    """A host that did not resolve: a network error (UNAVAILABLE), tried again --
    never a policy violation, which is for addresses that resolved and are refused."""
    metadata = {"host": host}
    if url:
        metadata["url"] = url[:2048]
    return StepFailure(
        "HOST_NOT_RESOLVED",
        f"the host {host or '(unknown)'} could not be resolved: {detail}",
        code=code_pb2.UNAVAILABLE,
        retryable=True,
        metadata=metadata,
    )


def is_invalid_selector_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PlaywrightError) and any(m in text for m in _INVALID_SELECTOR_MARKS)


def strict_count(exc: BaseException) -> int | None:
    """How many elements a strict locator resolved to, if `exc` is Playwright's strict
    mode violation."""
    found = _STRICT.search(first_line(exc, limit=100_000)) if isinstance(exc, PlaywrightError) else None
    return int(found.group(1)) if found else None


def is_closed_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PlaywrightError) and any(m in text for m in _CLOSED_MARKS)


def classify_playwright_error(
    exc: PlaywrightError, *, action: str, selector: str, timeout_s: float
) -> StepFailure:
    """A StepFailure for an error Playwright raised in a step (the browser's own
    death is told apart by the runner, which knows the session)."""
    line = first_line(exc)
    if isinstance(exc, PlaywrightTimeoutError):
        if action == "navigate":
            return StepFailure(
                "NAVIGATION_TIMEOUT",
                f"navigation timed out after {timeout_s:g}s",
                code=code_pb2.DEADLINE_EXCEEDED,
                retryable=True,
            )
        return step_timeout(timeout_s, line)
    if is_invalid_selector_error(exc):
        return invalid_selector(selector, line)
    strict = _STRICT.search(line)
    if strict:
        return strict_mode_violation(selector, int(strict.group(1)))
    if any(mark in line for mark in _NAME_NOT_RESOLVED_MARKS):
        found = _AT_URL.search(line)
        url = found.group(1) if found else ""
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        return host_not_resolved(host, line, url)
    if _NET_ERROR in line:
        return StepFailure(
            "NAVIGATION_FAILED",
            f"the page could not be loaded: {line}",
            code=code_pb2.UNAVAILABLE,
            retryable=True,
        )
    return StepFailure("ACTION_FAILED", line, code=code_pb2.ABORTED, retryable=True)


#: A job error's message stays well under the 8 KiB of an error's details.
MAX_MESSAGE_CHARS = 4000
#: Failures a `soft` step never turns into a recorded check: the job cannot go on.
HARD_REASONS = frozenset({
    "BROWSER_CRASHED", "URL_POLICY_VIOLATION", "HOST_NOT_RESOLVED", "INVALID_STEP", "INVALID_SELECTOR",
})


def soft_failures_error(failures: list[JobError]) -> JobError:
    """The job's error when soft checks failed: every failed step, in order."""
    steps = [f.metadata.get("step_index", "?") for f in failures]
    noun = "check" if len(failures) == 1 else "checks"
    named = ", ".join(f"steps[{i}]" for i in steps)
    listed = "; ".join(f.message for f in failures)
    return JobError(
        f"{len(failures)} soft {noun} failed ({named}): {listed}"[:MAX_MESSAGE_CHARS],
        code=code_pb2.FAILED_PRECONDITION,
        reason="EXPECTATION_FAILED",
        retryable=True,
        metadata={"soft_failures": str(len(failures)), "failed_steps": ",".join(steps)},
    )


def after_soft_failures(error: JobError, failures: list[JobError]) -> JobError:
    """A hard failure that came after failed soft checks: it names them too."""
    if not failures:
        return error
    steps = ", ".join(f"steps[{f.metadata.get('step_index', '?')}]" for f in failures)
    return JobError(
        f"{error.message} (soft checks failed before it: {steps})",
        code=error.code, reason=error.reason, retryable=error.retryable,
        metadata={**error.metadata, "soft_failures": str(len(failures)),
                  "failed_steps": ",".join(f.metadata.get("step_index", "?") for f in failures)},
    )
