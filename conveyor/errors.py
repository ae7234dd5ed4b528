"""Domain errors. The gateway maps each to one gRPC status, in one place
(gateway/errors.py); the store and the domain raise them and know nothing of gRPC."""

from __future__ import annotations

from dataclasses import dataclass


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
    field: str
    description: str


class InvalidArgument(ConveyorError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation, message: str | None = None):
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text)


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
