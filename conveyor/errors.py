"""Domain errors. The gateway maps each to one gRPC status, in one place
(gateway/errors.py); the store and the domain raise them and know nothing of gRPC.

Every error a client is shown carries a reason from the catalog below
(REQUEST_REASONS; a failed job's error, JOB_REASONS), which the README's "Error
reasons" section is generated from (`python -m conveyor.errors --write-readme`);
tests/test_error_reasons.py holds code, catalog and README together."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


class ConveyorError(Exception):
    """Base of every error a client may be shown. `reason` is a stable
    UPPER_SNAKE_CASE word for ErrorInfo."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = metadata or {}


@dataclass(frozen=True)
class FieldViolation:
    """One bad field. `reason`, when the field names something that does not exist
    (a kind, a job to depend on), is the error's reason if every violation says it."""

    field: str
    description: str
    reason: str = ""


class InvalidArgument(ConveyorError):
    """FIELD_INVALID, naming each field (BadRequest); or the violations' own reason
    when they all give the same one."""

    reason = "FIELD_INVALID"

    def __init__(self, violations: list[FieldViolation] | FieldViolation, message: str | None = None,
                 *, reason: str | None = None):
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        shared = {v.reason for v in self.violations}
        super().__init__(text, reason=reason or (shared.pop() if len(shared) == 1 else None))


class NotFound(ConveyorError):
    reason = "NOT_FOUND"


class FailedPrecondition(ConveyorError):
    reason = "FAILED_PRECONDITION"


class AlreadyExists(ConveyorError):
    reason = "ALREADY_EXISTS"


class ResourceExhausted(ConveyorError):
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


class QuotaExceeded(ResourceExhausted):
    """A tenant's quota is used up: google.rpc.QuotaFailure names it (`subject`)."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, subject: str, retry_after_seconds: float = 5.0,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds, reason="QUOTA_EXCEEDED")
        self.subject = subject
        self.metadata = metadata or {}


class Unavailable(ConveyorError):
    reason = "UNAVAILABLE"


class OutOfRange(ConveyorError):
    reason = "OUT_OF_RANGE"


class Unauthenticated(ConveyorError):
    """No key, or one that is unknown or revoked."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(ConveyorError):
    """The caller's role may not do this (never said of another tenant's things:
    those do not exist for the caller, NotFound)."""

    reason = "PERMISSION_DENIED"


# ---- the catalog of reasons ---------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """What one ErrorInfo reason says: the google.rpc code it comes with and, in one
    line, what happened."""

    code: str
    meaning: str


def job_state_reason(state: str) -> str:
    """The reason of a cancel or retry refused for the job's state (JOB_<STATE>)."""
    return f"JOB_{state}"


#: The ErrorInfo reason (domain conveyor.dev) of every refused call, gRPC or the
#: dashboard's HTTP API, with the code it comes with. No refusal's reason is its
#: code's name: INTERNAL is only for a fault of the server's.
REQUEST_REASONS: dict[str, Reason] = {
    # Requests that do not fit the contract.
    "FIELD_INVALID": Reason("INVALID_ARGUMENT", "a field is out of bounds or ill-formed; BadRequest names each field"),
    "MALFORMED_REQUEST": Reason("INVALID_ARGUMENT", "the request bytes (or a dashboard body) do not decode"),
    "KIND_NOT_FOUND": Reason("INVALID_ARGUMENT", "no executor has registered the kind named in `kind.name`"),
    "DEPENDENCY_NOT_FOUND": Reason("INVALID_ARGUMENT", "a job named in `depends_on` does not exist for the caller"),
    # Things that do not exist (another tenant's things do not exist for the caller).
    "JOB_NOT_FOUND": Reason("NOT_FOUND", "no such job (metadata `job_id`)"),
    "QUEUE_NOT_FOUND": Reason("NOT_FOUND", "no such queue, or none the caller's tenant has used (metadata `queue`)"),
    "SCHEDULE_NOT_FOUND": Reason("NOT_FOUND", "no such schedule (metadata `schedule_id`)"),
    "ARTIFACT_NOT_FOUND": Reason("NOT_FOUND", "the job kept no artifact of that name (metadata `job_id`, `name`)"),
    "SESSION_NOT_FOUND": Reason("NOT_FOUND", "no such browser session, or it expired (metadata `session`)"),
    "SUITE_NOT_FOUND": Reason("NOT_FOUND", "no such suite (metadata `suite_id`)"),
    "KEY_NOT_FOUND": Reason("NOT_FOUND", "no such API key (metadata `key_id`)"),
    "SERVICE_NOT_FOUND": Reason("NOT_FOUND", "the health check names a service this server does not have"),
    # The job's state refuses the action (metadata `job_id`, `state`).
    "JOB_COMPLETED": Reason("FAILED_PRECONDITION", "cancel or retry of a job that already completed"),
    "JOB_FAILED": Reason("FAILED_PRECONDITION", "cancel of a job that already failed (retry it instead)"),
    "JOB_CANCELLED": Reason("FAILED_PRECONDITION", "cancel of a job that was already cancelled"),
    "JOB_WAITING": Reason("FAILED_PRECONDITION", "retry of a job that is waiting (only failed or cancelled ones)"),
    "JOB_DELAYED": Reason("FAILED_PRECONDITION", "retry of a job that is delayed (only failed or cancelled ones)"),
    "JOB_ACTIVE": Reason("FAILED_PRECONDITION", "retry of a job that is running (only failed or cancelled ones)"),
    "SCHEDULE_DELETED": Reason("FAILED_PRECONDITION", "the request id made a schedule that has since been deleted"),
    # Made before.
    "DUPLICATE_JOB": Reason("ALREADY_EXISTS", "a job with this dedup key is open or in its window "
                                              "(metadata `existing_job_id`)"),
    "REQUEST_ID_REUSED": Reason("ALREADY_EXISTS", "the request id was used in the last 24 h for a different request"),
    # Limits.
    "QUOTA_EXCEEDED": Reason("RESOURCE_EXHAUSTED", "the tenant's open-job quota or submit rate is used up "
                                                   "(QuotaFailure `tenant:<name>[:submit-rate]`, RetryInfo)"),
    "TOO_MANY_SCHEDULES": Reason("RESOURCE_EXHAUSTED", "the tenant has as many schedules as it may"),
    "SESSION_TOO_LARGE": Reason("RESOURCE_EXHAUSTED", "a browser session's saved state is over its size limit"),
    "SESSION_LIMIT": Reason("RESOURCE_EXHAUSTED", "the tenant has as many browser sessions as it may"),
    # Who may.
    "KEY_MISSING": Reason("UNAUTHENTICATED", "no API key was sent (`authorization: Bearer <key>`)"),
    "KEY_INVALID": Reason("UNAUTHENTICATED", "the API key is unknown or revoked"),
    "ROLE_TOO_LOW": Reason("PERMISSION_DENIED", "the key's role may not do this (metadata `needed_role`, `role`)"),
    "DASHBOARD_HEADER_MISSING": Reason("PERMISSION_DENIED", "a dashboard action came without its "
                                                            "`X-Conveyor-Dashboard: 1` header"),
    # Try again.
    "EVENTS_TRIMMED": Reason("OUT_OF_RANGE", "the events after `after_sequence` are no longer kept "
                                             "(metadata `oldest_sequence`)"),
    "GATEWAY_SHUTTING_DOWN": Reason("UNAVAILABLE", "the gateway is shutting down: call another, or again"),
    "STORE_UNAVAILABLE": Reason("UNAVAILABLE", "the job store (Redis) is unreachable; RetryInfo says when to retry"),
    "NOT_REPLICATED": Reason("UNAVAILABLE", "the job is on the Redis primary but not yet on enough replicas: "
                                            "submit again with the same request_id (metadata `job_id`)"),
    "ARTIFACT_STORE_UNAVAILABLE": Reason("UNAVAILABLE", "the artifact store (S3) failed a read or write; retry"),
    "METHOD_NOT_IMPLEMENTED": Reason("UNIMPLEMENTED", "this server does not implement the method"),
    "INTERNAL": Reason("INTERNAL", "a fault of the server's (logged); nothing the request did"),
}

#: The reason in a failed (or cancelled) job's `error`, and each attempt's: the code
#: of that google.rpc.Status and what happened. Reasons marked "retried" leave the job
#: more attempts if it has them. A kind's own handler may raise reasons of its own.
JOB_REASONS: dict[str, Reason] = {
    # Every job.
    "JOB_TIMEOUT": Reason("DEADLINE_EXCEEDED", "the attempt ran longer than the job's `timeout`; retried"),
    "EXECUTOR_LOST": Reason("UNAVAILABLE", "the executor running the attempt stopped responding; retried"),
    "EXECUTOR_ERROR": Reason("INTERNAL", "the executor failed running the attempt (logged there); retried"),
    "KIND_NOT_SERVED": Reason("FAILED_PRECONDITION", "the executor that took the job does not serve its kind; retried"),
    "CANCELLED_BY_CLIENT": Reason("CANCELLED", "CancelJob cancelled it (metadata `key_id`)"),
    "DEPENDENCY_FAILED": Reason("CANCELLED", "a job it depends on failed or was cancelled (metadata `dependency`)"),
    "SUITE_NOT_SUBMITTED": Reason("ABORTED", "made by a SubmitSuite that was then refused midway (a quota, "
                                             "a deduplication key): cancelled before it ran (metadata `suite_id`)"),
    "NOOP_INJECTED_FAILURE": Reason("UNAVAILABLE", "a `noop` task failed an attempt as `fail_first_attempts` "
                                                   "asked; retried"),
    # Kinds (conveyor/kinds): a handler's errors.
    "JOB_FAILED": Reason("UNKNOWN", "a kind's handler raised a JobError without a reason of its own"),
    "RETRYABLE_ERROR": Reason("UNAVAILABLE", "a kind's handler raised RetryableError without a reason; retried"),
    "PERMANENT_ERROR": Reason("FAILED_PRECONDITION", "a kind's handler raised PermanentError without a reason"),
    "HANDLER_ERROR": Reason("UNKNOWN", "a kind's handler raised another exception; retried unless the kind's "
                                       "Retry leaves its type out"),
    "INVALID_INPUT": Reason("INVALID_ARGUMENT", "the job's input does not fit its kind's input model "
                                                "(metadata `path`)"),
    "OUTPUT_NOT_JSON": Reason("FAILED_PRECONDITION", "the handler returned something that is not JSON"),
    "OUTPUT_INVALID": Reason("FAILED_PRECONDITION", "a built-in kind returned something other than a JobResult"),
    "ARTIFACT_TOO_LARGE": Reason("RESOURCE_EXHAUSTED", "an artifact (or download) is larger than the executor keeps"),
    "NO_BROWSER": Reason("FAILED_PRECONDITION", "the kind needs a browser and the executor runs no browser pool"),
    # HTTP fetches (http_fetch, crawl).
    "URL_POLICY_VIOLATION": Reason("PERMISSION_DENIED", "the URL policy refused an address (private, loopback, "
                                                        "not allowed)"),
    "HOST_NOT_RESOLVED": Reason("UNAVAILABLE", "a host name did not resolve; retried"),
    "FETCH_FAILED": Reason("UNAVAILABLE", "an HTTP fetch failed (connection, timeout); retried"),
    "RESPONSE_TOO_LARGE": Reason("FAILED_PRECONDITION", "an HTTP response is larger than the job allows"),
    "TOO_MANY_REDIRECTS": Reason("FAILED_PRECONDITION", "an HTTP fetch was redirected more times than allowed"),
    "BAD_REDIRECT": Reason("FAILED_PRECONDITION", "an HTTP redirect's Location cannot be read"),
    "RENDER_FAILED": Reason("UNAVAILABLE", "a crawled page could not be rendered; retried"),
    # Browser tasks.
    "INVALID_TASK": Reason("INVALID_ARGUMENT", "the browser task cannot run as given (e.g. an unknown device)"),
    "TOO_MANY_STEPS": Reason("INVALID_ARGUMENT", "the browser task has more steps than the executor allows"),
    "INVALID_STEP": Reason("INVALID_ARGUMENT", "a step cannot run as given"),
    "INVALID_SELECTOR": Reason("INVALID_ARGUMENT", "a selector or locator is not valid"),
    "INVALID_FILES": Reason("INVALID_ARGUMENT", "the task's `files` are ill-formed or too large"),
    "UPLOAD_FILE_MISSING": Reason("INVALID_ARGUMENT", "an upload step names a file not among `browser.files`"),
    "ELEMENT_NOT_FOUND": Reason("NOT_FOUND", "no element matched a step's target in time; retried"),
    "STRICT_MODE_VIOLATION": Reason("FAILED_PRECONDITION", "a locator matched several elements where an action "
                                                           "needs one (the count is in the message)"),
    "EXPECTATION_FAILED": Reason("FAILED_PRECONDITION", "an `expect` step (or soft checks) failed; retried"),
    "STEP_TIMEOUT": Reason("DEADLINE_EXCEEDED", "a step did not finish within its timeout; retried"),
    "NAVIGATION_TIMEOUT": Reason("DEADLINE_EXCEEDED", "a page did not load within the step's timeout; retried"),
    "NAVIGATION_FAILED": Reason("UNAVAILABLE", "a page could not be loaded (network error); retried"),
    "ACTION_FAILED": Reason("ABORTED", "Playwright failed a step for another reason; retried"),
    "NO_HISTORY": Reason("FAILED_PRECONDITION", "goBack/goForward with no page to go to"),
    "PAGE_NOT_FOUND": Reason("NOT_FOUND", "a step switched to a page index that is not open"),
    "RESULT_TOO_LARGE": Reason("RESOURCE_EXHAUSTED", "an `evaluate` step returned more JSON than allowed"),
    "BROWSER_CRASHED": Reason("UNAVAILABLE", "the browser crashed or disconnected while the job ran; retried"),
    "BROWSER_UNAVAILABLE": Reason("UNAVAILABLE", "the browser pool could not give the job a page; retried"),
    "BROWSER_LAUNCH_FAILED": Reason("UNAVAILABLE", "Chromium could not be started; retried"),
    "BROWSER_LAUNCH_TIMEOUT": Reason("UNAVAILABLE", "Chromium did not start in time; retried"),
    "BROWSER_NEW_PAGE_TIMEOUT": Reason("UNAVAILABLE", "the browser did not open a page in time; retried"),
    "BROWSER_POOL_CLOSED": Reason("UNAVAILABLE", "the executor's browser pool is shutting down; retried"),
    "SESSION_NOT_FOUND": Reason("NOT_FOUND", "the task uses a browser session that does not exist or expired"),
    "SESSION_NOT_APPLIED": Reason("UNAVAILABLE", "a saved browser session could not be loaded; retried"),
    "SESSION_NOT_SAVED": Reason("UNAVAILABLE", "the browser session could not be saved; retried"),
    "SESSION_TOO_LARGE": Reason("RESOURCE_EXHAUSTED", "the session to save is over its size limit"),
    "SESSION_LIMIT": Reason("RESOURCE_EXHAUSTED", "saving the session would pass the tenant's session limit"),
}

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- reasons:begin -->", "<!-- reasons:end -->"


def _table(reasons: dict[str, Reason]) -> list[str]:
    rows = ["| reason | code | what happened |", "|---|---|---|"]
    rows += [f"| `{name}` | `{r.code}` | {r.meaning.replace('|', '/')} |" for name, r in reasons.items()]
    return rows


def markdown() -> str:
    """The README's "Error reasons" tables (between the markers), from the catalog."""
    lines = [
        "**A refused call** (gRPC status, or the dashboard's `{\"error\": {...}}`): `ErrorInfo.reason`",
        "",
        *_table(REQUEST_REASONS),
        "",
        "**A failed job** (`job.error`, `attempts[].error`): its `ErrorInfo.reason`",
        "",
        *_table(JOB_REASONS),
    ]
    return "\n".join(lines) + "\n"


def readme_section(text: str) -> str:
    """What the README has between the markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def write_readme() -> None:
    """Replace the README's section with the catalog's tables."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-readme"]:
        write_readme()
    else:
        sys.stdout.write(markdown())
