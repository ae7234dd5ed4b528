"""The one error the SDK raises for a failed call, with the server's rich details
(`google.rpc.Status`: ErrorInfo, BadRequest field violations, RetryInfo) decoded."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ConveyorRpcError(Exception):
    """A call failed. `code` is the gRPC status code; the rest comes from the status
    details when the server sent them."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        retry_delay: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.retry_delay = retry_delay
        self.status = status
        super().__init__(code, message)

    def __str__(self) -> str:
        """One line: code, message, and each field violation."""
        text = f"{self.code.name}: {self.message or '(no message)'}"
        # The server's message usually names the violations already; add the ones
        # it does not.
        missing = [v for v in self.field_violations if v.field not in self.message]
        if missing:
            text += " [" + "; ".join(f"{v.field}: {v.description}" for v in missing) + "]"
        if self.retry_delay is not None:
            text += f" (retry in {self.retry_delay:g} s)"
        return text

    @classmethod
    def from_grpc(cls, err: grpc.RpcError) -> ConveyorRpcError:
        code: grpc.StatusCode = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message: str = (err.details() if hasattr(err, "details") else "") or ""
        try:
            status = rpc_status.from_call(err)
        except (ValueError, TypeError, AttributeError):
            status = None
        out = cls(code=code, message=message, status=status)
        if status is None:
            return out
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                out.reason = info.reason
                out.metadata = dict(info.metadata)
            elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
                out.field_violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
                out.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        return out
