"""How a job attempt fails: a JobError carries a google.rpc code, a stable reason,
whether the retry policy may try again, and metadata (step index, name, action,
selector...). It becomes the job's `error` (a google.rpc.Status with ErrorInfo)."""

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
        return f"JobError({self.reason}, {self.message!r}, retryable={self.retryable})"
