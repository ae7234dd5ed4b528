"""The Conveyor Python SDK: `AsyncConveyorClient` (asyncio) and `ConveyorClient`
(blocking), over the `conveyor.v1` gRPC contract."""

from clients.sdk._common import (
    DEFAULT_TARGET,
    is_terminal,
    job_output,
    job_request,
    kinds_of,
    queue_events,
    to_state,
    to_submit_request,
)
from clients.sdk.aio import AsyncConveyorClient
from clients.sdk.errors import ConveyorRpcError, FieldViolation
from clients.sdk.sync import ConveyorClient

__all__ = [
    "DEFAULT_TARGET",
    "AsyncConveyorClient",
    "ConveyorClient",
    "ConveyorRpcError",
    "FieldViolation",
    "is_terminal",
    "job_output",
    "job_request",
    "kinds_of",
    "queue_events",
    "to_state",
    "to_submit_request",
]
