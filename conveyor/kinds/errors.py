"""How a job attempt fails: a JobError carries a google.rpc code, a stable reason,
whether the retry policy may try again, and metadata. It becomes the job's `error`
(a google.rpc.Status with ErrorInfo). A kind's handler raises RetryableError or
PermanentError (or any exception: retried, as in Dramatiq)."""

from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from conveyor.statuses import make_status


class JobError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: int = code_pb2.UNKNOWN,
        reason: str = "JOB_FAILED",
        retryable: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.retryable = retryable
        self.metadata = dict(metadata or {})

    def to_status(self) -> status_pb2.Status:
        return make_status(self.code, self.reason, self.message, self.metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason}, {self.message!r}, retryable={self.retryable})"


class RetryableError(JobError):
    """The attempt failed for a reason that may pass (a service down, a timeout): the
    job is tried again while it has attempts left."""

    def __init__(self, message: str, *, reason: str = "RETRYABLE_ERROR", code: int = code_pb2.UNAVAILABLE,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, reason=reason, retryable=True, metadata=metadata)


class PermanentError(JobError):
    """The job cannot succeed (bad input, a refusal): it fails for good at once."""

    def __init__(self, message: str, *, reason: str = "PERMANENT_ERROR", code: int = code_pb2.FAILED_PRECONDITION,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, reason=reason, retryable=False, metadata=metadata)


class JobCancelled(BaseException):
    """Raised inside a blocking handler's thread when its job is cancelled or timed
    out (as Dramatiq's Abortable interrupts a worker thread). A BaseException, so a
    handler's `except Exception` does not swallow it."""
