"""The Conveyor Python SDK: `AsyncConveyorClient` (asyncio) and `ConveyorClient`
(blocking), over the `conveyor.v1` gRPC contract.

Installed on its own with `pip install ./clients/python` (the `conveyor-client`
distribution: grpcio and protobuf, nothing of the service)."""

from conveyor_client._common import (
    DEFAULT_TARGET,
    is_terminal,
    job_output,
    job_request,
    kinds_of,
    queue_events,
    to_state,
    to_submit_request,
)
from conveyor_client.aio import AsyncConveyorClient
from conveyor_client.errors import ConveyorRpcError, FieldViolation
from conveyor_client.sync import ConveyorClient
from conveyor_client.waiter import JobEnd, JobWaiter

__all__ = [
    "DEFAULT_TARGET",
    "AsyncConveyorClient",
    "ConveyorClient",
    "ConveyorRpcError",
    "FieldViolation",
    "JobEnd",
    "JobWaiter",
    "is_terminal",
    "job_output",
    "job_request",
    "kinds_of",
    "queue_events",
    "to_state",
    "to_submit_request",
]
