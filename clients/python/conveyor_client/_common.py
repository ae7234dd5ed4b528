"""Everything about how the SDK talks gRPC, in one place: channel options, call
metadata (the API key), and turning Python values into request messages. The async
and the sync client both build on it."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, task_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
"""Deadline (seconds) of a unary call unless the caller gives one."""
UNSET: Any = object()
"""A `timeout=` not given: the client's default deadline (None means no deadline)."""
MAX_WAIT_CHUNK = 300.0
"""The server's largest WaitJob timeout; longer waits are several long-polls."""

try:  # optional: with OpenTelemetry installed, calls carry the caller's trace context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator as _TraceContext
except ImportError:  # pragma: no cover - the SDK does not depend on it
    _otel_trace = None  # type: ignore[assignment]
    _TraceContext = None  # type: ignore[assignment,misc]

try:
    _VERSION = importlib.metadata.version("conveyor-client")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    _VERSION = "0"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Requests carry staged upload files (bounded by the server, 8 MiB by default);
    # responses carry results and artifact chunks.
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.primary_user_agent", f"conveyor-python/{_VERSION}"),
    # Keepalive: after 30 s with nothing received the channel pings, and a ping not
    # answered within 10 s ends the connection with UNAVAILABLE, which watch() resumes
    # from. Without it a stream over a path gone silent (the gateway's host lost, a NAT
    # or load balancer forgetting the connection) waits for good: a watcher sends
    # nothing after its request. Pings go on however long the client has sent nothing.
    # The gateway allows a client's pings every 5 s or more (see its CLIENT_PING_MIN_SECONDS).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # (A ping in flight, grpc's own bandwidth probe say, stands for the keepalive one;
    # the wait for its answer is this, 60 s unless set.)
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]



@runtime_checkable
class Model(Protocol):
    """A pydantic model (what `model_dump` gives is sent); the SDK does not depend on pydantic."""

    def model_dump(self, *, mode: str = ..., by_alias: bool = ...) -> Any: ...


@runtime_checkable
class RetrySpec(Protocol):
    """A `conveyor.kinds.Retry` (or anything with its fields); the SDK does not import it."""

    @property
    def attempts(self) -> int: ...
    @property
    def backoff(self) -> str: ...
    @property
    def base(self) -> float | str: ...
    @property
    def max(self) -> float | str: ...


Metadata = tuple[tuple[str, str], ...]
JobRequest = job_service_pb2.SubmitJobRequest | Mapping[str, Any]
KindInput = Mapping[str, Any] | Model
"""A kind's input: a dict (JSON-able) or a pydantic model (sent as its JSON)."""
RetryLike = task_pb2.RetryPolicy | RetrySpec | Mapping[str, Any]
"""A retry policy for one job: a RetryPolicy, a `conveyor.kinds.Retry`, or a dict such
as `{"backoff": "fixed", "base": "1s", "max": "30s", "attempts": 2}` (durations as
seconds, "500ms"/"2s"/"1m" texts or timedeltas; `attempts` sets max_attempts)."""


def channel_options(extra: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """The SDK's channel options, each of `extra` in place of the SDK's of that name."""
    return list({**dict(CHANNEL_OPTIONS), **dict(extra or [])}.items())


_TLS_SCHEMES = {"grpcs": True, "https": True, "grpc": False, "http": False}


def _pem(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot read: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {path}: not a PEM file")
    return data


def channel_target(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    tls: bool | None = None,
    ca_cert: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> tuple[str, grpc.ChannelCredentials | None]:
    """The gRPC target and the channel's credentials (None: plaintext).

    `credentials` (gRPC channel credentials made by the caller) are used as they are,
    and exclude the other arguments.

    TLS is on with `tls=True`, with a `grpcs://` or `https://` target, or when a
    `ca_cert` or client certificate is given; `grpc://` and `http://` say plaintext
    (the scheme is dropped from the target). Without `ca_cert` the server's
    certificate must be signed by a CA the system trusts; with it, by one in that PEM
    bundle. `client_cert` and `client_key` (PEM files, both or neither) present a
    client certificate, for a gateway that requires one (mTLS). Other targets
    (`host:port`, `dns:///host:port`, `unix:path`) are passed to gRPC as they are."""
    scheme, sep, rest = target.partition("://")
    implied: bool | None = None
    if sep and scheme.lower() in _TLS_SCHEMES:
        implied = _TLS_SCHEMES[scheme.lower()]
        target = rest.rstrip("/")
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together")
    wants_files = ca_cert is not None or client_cert is not None
    if credentials is not None:
        if wants_files or tls is not None:
            raise ValueError("give credentials, or tls/ca_cert/client_cert/client_key, not both")
        if implied is False:
            raise ValueError(f"credentials were given, but the target {scheme}://{rest} says plaintext")
        return target, credentials
    if tls is None:
        tls = implied if implied is not None else wants_files
    if not tls:
        if implied:
            raise ValueError(f"tls=False, but the target {scheme}://{rest} says TLS")
        if wants_files:
            raise ValueError("ca_cert and client certificates need TLS (tls=False was given)")
        return target, None
    if implied is False:
        raise ValueError(f"TLS was asked for, but the target {scheme}://{rest} says plaintext")
    root = _pem(ca_cert, "CA certificate") if ca_cert is not None else None
    chain = _pem(client_cert, "client certificate") if client_cert is not None else None
    key = _pem(client_key, "client key") if client_key is not None else None
    return target, grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def call_metadata(api_key: str | None) -> Metadata:
    """Metadata sent with every call: the API key as a bearer token."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def traced_metadata(metadata: Metadata) -> Metadata:
    """`metadata` plus the current OpenTelemetry span's context as W3C `traceparent`
    (and `tracestate`), when opentelemetry is installed and a span is current: the
    gateway's submit span, and the job's spans in the executor, join the caller's trace."""
    if _otel_trace is None or not _otel_trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, str] = {}
    _TraceContext().inject(carrier)
    return (*metadata, *carrier.items())


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


def job_request(
    request: JobRequest | None = None,
    *,
    kind: str | None = None,
    input: KindInput | None = None,
    retry: RetryLike | None = None,
    queue: str | None = None,
    priority: str | int | None = None,
    max_attempts: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> job_service_pb2.SubmitJobRequest:
    """A SubmitJobRequest: `request` (a message or a dict in the JSON mapping, as for
    `to_submit_request`), or a job of `kind` with `input` (`{"kind": {"name": kind,
    "input": input}}`), with the other arguments set on top of it."""
    if request is None and kind is None:
        raise TypeError("give a job request, or kind= (and input=)")
    message = job_service_pb2.SubmitJobRequest()
    if request is not None:
        message.CopyFrom(to_submit_request(request))
    if kind is not None:
        if message.WhichOneof("task") is not None:
            raise ValueError(f"kind={kind!r}, but the request already has a task ({message.WhichOneof('task')})")
        message.kind.name = kind
        message.kind.input.SetInParent()  # present even when empty: {"input": {}}
        data = input.model_dump(mode="json", by_alias=True) if isinstance(input, Model) else input or {}
        if not isinstance(data, Mapping):
            raise TypeError(f"a kind's input is a dict or a pydantic model, not {type(data).__name__}")
        try:
            json_format.ParseDict(jsonable(data), message.kind.input)
        except (json_format.ParseError, TypeError, ValueError) as err:
            raise ValueError("a kind's input must be JSON: " + " ".join(str(err).split())) from err
    elif input is not None:
        raise ValueError("input= goes with kind=")
    if retry is not None:
        policy, attempts = to_retry_policy(retry)
        message.retry.CopyFrom(policy)
        if attempts is not None and max_attempts is None:
            max_attempts = attempts
    if queue is not None:
        message.queue = queue
    if priority is not None:
        message.priority = to_priority(priority)
    if max_attempts is not None:
        message.max_attempts = max_attempts
    if labels is not None:
        message.labels.update(labels)
    return message


_BACKOFFS = {"exponential": task_pb2.BACKOFF_EXPONENTIAL, "fixed": task_pb2.BACKOFF_FIXED}


def to_retry_policy(retry: RetryLike) -> tuple[task_pb2.RetryPolicy, int | None]:
    """A RetryPolicy, and the attempts the policy names (None: not named)."""
    if isinstance(retry, task_pb2.RetryPolicy):
        return retry, None
    if isinstance(retry, Mapping):
        fields: dict[str, Any] = dict(retry)
    elif isinstance(retry, RetrySpec):
        fields = {"backoff": retry.backoff, "base": retry.base, "max": retry.max, "attempts": retry.attempts}
    else:
        raise TypeError(f"a retry policy is a dict, a Retry or a RetryPolicy, not {type(retry).__name__}")
    policy = task_pb2.RetryPolicy()
    attempts: int | None = None
    for key, value in fields.items():
        if key == "backoff":
            policy.backoff = _backoff(value)
        elif key in ("base", "max"):
            getattr(policy, key).CopyFrom(_duration_of(value, key))
        elif key in ("attempts", "max_attempts", "maxAttempts"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"retry {key}: a whole number of at least 1, not {value!r}")
            attempts = value
        else:
            raise ValueError(f"retry: unknown setting {key!r} (backoff, base, max, attempts)")
    return policy, attempts


def _backoff(value: Any) -> task_pb2.Backoff.ValueType:
    if isinstance(value, int) and not isinstance(value, bool):
        return task_pb2.Backoff.ValueType(value)
    name = str(value).strip().lower().removeprefix("backoff_")
    if name not in _BACKOFFS:
        raise ValueError(f"retry backoff: 'exponential' or 'fixed', not {value!r}")
    return _BACKOFFS[name]


def _duration_of(value: Any, what: str) -> duration_pb2.Duration:
    if isinstance(value, duration_pb2.Duration):
        return value
    if isinstance(value, dt.timedelta):
        return duration(value)
    try:
        seconds = seconds_of(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"retry {what}: {err}") from None
    if seconds < 0:
        raise ValueError(f"retry {what}: must not be negative")
    return duration(seconds)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds_of(value: float | str) -> float:
    """Seconds from a number or a text such as "2s", "500ms", "1.5m", "1h" (the texts
    `conveyor.kinds.Retry` takes; tests/test_sdk_lean.py checks the two agree)."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (say e.g. '2s', '500ms', '1m')")
    return float(match.group(1)) * _UNITS[match.group(2)]


def to_priority(priority: str | int) -> job_pb2.Priority.ValueType:
    """A Priority from its name ("high", "PRIORITY_HIGH") or number."""
    if isinstance(priority, int):
        return job_pb2.Priority.ValueType(priority)
    name = priority.strip().upper()
    name = name if name.startswith("PRIORITY_") else f"PRIORITY_{name}"
    try:
        return job_pb2.Priority.Value(name)
    except ValueError:
        names = ", ".join(n.removeprefix("PRIORITY_").lower() for n in job_pb2.Priority.keys()[1:])
        raise ValueError(f"unknown priority {priority!r}; one of {names}") from None


def plain(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as plain Python (dict, list, str, bool, None, and
    numbers: whole ones as int, as JSON writes them)."""
    which = value.WhichOneof("kind")
    if which == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= 2**53 else number
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "struct_value":
        return {key: plain(item) for key, item in value.struct_value.fields.items()}
    if which == "list_value":
        return [plain(item) for item in value.list_value.values]
    return None


def job_output(job: job_pb2.Job | job_pb2.JobResult) -> Any:
    """What the kind's handler returned (`result.output`) as plain Python; None when
    there is none (not completed yet, or a `browser`/`noop` job)."""
    result = job.result if isinstance(job, job_pb2.Job) else job
    return plain(result.output) if result.HasField("output") else None


def kinds_of(workers: Iterable[queue_service_pb2.Worker]) -> dict[str, int]:
    """The kinds the workers serve, each with how many of them serve it, by name."""
    counts: dict[str, int] = {}
    for worker in workers:
        for name in set(worker.kinds):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def retry_failed_request(
    name: str, limit: int, priority: str | int | None, max_attempts: int | None
) -> queue_service_pb2.RetryFailedJobsRequest:
    request = queue_service_pb2.RetryFailedJobsRequest(queue=name, limit=limit)
    if priority is not None:
        request.priority = to_priority(priority)
    if max_attempts is not None:
        request.max_attempts = max_attempts
    return request


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
