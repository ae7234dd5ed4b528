"""Everything about how the SDK talks gRPC, in one place: channel options, call
metadata (the API key), and turning Python values into request messages. The async
and the sync client both build on it."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
"""Deadline (seconds) of a unary call unless the caller gives one."""
MAX_WAIT_CHUNK = 300.0
"""The server's largest WaitJob timeout; longer waits are several long-polls."""

try:
    _VERSION = importlib.metadata.version("conveyor")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    _VERSION = "0"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Requests carry staged upload files (bounded by the server, 8 MiB by default);
    # responses carry results and artifact chunks.
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.primary_user_agent", f"conveyor-python/{_VERSION}"),
]

Metadata = tuple[tuple[str, str], ...]
JobRequest = job_service_pb2.SubmitJobRequest | Mapping[str, Any]


def channel_options(extra: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    return [*CHANNEL_OPTIONS, *(extra or [])]


def call_metadata(api_key: str | None) -> Metadata:
    """Metadata sent with every call: the API key as a bearer token."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def to_submit_request(request: JobRequest) -> job_service_pb2.SubmitJobRequest:
    """A SubmitJobRequest from a message or from a dict in the protobuf JSON mapping
    (camelCase or the proto's snake_case names; enums by name; durations as "1.5s")."""
    if isinstance(request, job_service_pb2.SubmitJobRequest):
        return request
    if not isinstance(request, Mapping):
        raise TypeError(f"a job request is a SubmitJobRequest or a dict, not {type(request).__name__}")
    message = job_service_pb2.SubmitJobRequest()
    try:
        json_format.ParseDict(jsonable(request), message)
    except json_format.ParseError as err:
        raise ValueError("not a valid SubmitJobRequest: " + " ".join(str(err).split())) from err
    return message


def jsonable(value: Any) -> Any:
    """Turn what YAML may produce (dates and times) into their JSON-mapping strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat() + "T00:00:00Z"
    return value


def to_state(state: str | int | None) -> job_pb2.JobState.ValueType:
    """A JobState from its name ("COMPLETED", "completed", "JOB_STATE_COMPLETED") or
    number; 0 (any) for None or ""."""
    if state is None or state == "":
        return job_pb2.JOB_STATE_UNSPECIFIED
    if isinstance(state, int):
        return job_pb2.JobState.ValueType(state)
    name = state.strip().upper()
    if not name.startswith("JOB_STATE_"):
        name = "JOB_STATE_" + name
    try:
        return job_pb2.JobState.Value(name)
    except ValueError:
        names = ", ".join(n.removeprefix("JOB_STATE_") for n in job_pb2.JobState.keys()[1:])
        raise ValueError(f"unknown job state {state!r}; one of {names}") from None


def duration(seconds: float | dt.timedelta) -> duration_pb2.Duration:
    """A Duration from seconds or a timedelta."""
    if isinstance(seconds, dt.timedelta):
        seconds = seconds.total_seconds()
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def update_queue_request(
    name: str, concurrency: int | None, host_rate_limit: int | None
) -> queue_service_pb2.UpdateQueueRequest:
    """Only the settings given are sent (the fields are `optional`); 0 sets a setting
    back to its default (concurrency) or removes it (host_rate_limit)."""
    if concurrency is None and host_rate_limit is None:
        raise ValueError("give concurrency and/or host_rate_limit")
    request = queue_service_pb2.UpdateQueueRequest(queue=name)
    if concurrency is not None:
        request.concurrency = concurrency
    if host_rate_limit is not None:
        request.host_rate_limit = host_rate_limit
    return request


def clean_queue_request(
    name: str, state: str | int, older_than: float | dt.timedelta | None, limit: int
) -> queue_service_pb2.CleanQueueRequest:
    request = queue_service_pb2.CleanQueueRequest(queue=name, state=to_state(state), limit=limit)
    if older_than is not None:
        request.older_than.CopyFrom(duration(older_than))
    return request


def watch_queue_request(
    name: str, after_sequence: int | None, max_batch_size: int = 0
) -> queue_service_pb2.WatchQueueRequest:
    request = queue_service_pb2.WatchQueueRequest(queue=name, max_batch_size=max_batch_size)
    if after_sequence is not None:
        request.after_sequence = after_sequence
    return request


def queue_events(message: queue_service_pb2.WatchQueueResponse) -> list[job_pb2.JobEvent]:
    """The events a WatchQueue message carries: one (`event`), a batch (`events`), or
    none (a heartbeat)."""
    kind = message.WhichOneof("kind")
    if kind == "event":
        return [message.event]
    if kind == "events":
        return list(message.events.events)
    return []


TERMINAL_STATES = frozenset({job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED})


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""A watch stream that ends with one of these is resumed where it stopped."""
