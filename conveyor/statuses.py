"""google.rpc.Status values as the store records them (a job's `error`, an event's error)."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "conveyor.dev"


def make_status(code: int, reason: str, message: str, metadata: dict[str, str] | None = None) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code, message=message, details=[detail])


def status_bytes(code: int, reason: str, message: str, **metadata: str) -> bytes:
    data: bytes = make_status(code, reason, message, metadata).SerializeToString()
    return data


#: The error a job cancelled through CancelJob records (by the gateway for a waiting
#: job, by the executor for a running one).
CANCELLED_BY_CLIENT = status_bytes(code_pb2.CANCELLED, "CANCELLED_BY_CLIENT", "the job was cancelled")


def cancelled_by(key_id: str) -> bytes:
    """CANCELLED_BY_CLIENT naming the API key that asked for it (metadata `key_id`)."""
    if not key_id:
        return CANCELLED_BY_CLIENT
    return status_bytes(code_pb2.CANCELLED, "CANCELLED_BY_CLIENT", "the job was cancelled", key_id=key_id)


def error_reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a status, or ''."""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
