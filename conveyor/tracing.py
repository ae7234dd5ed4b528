"""OpenTelemetry traces of jobs (CONVEYOR_TRACING=on; off by default).

One trace follows a job from the client's submit through every attempt and step:

    <the client's span>            (sent as W3C `traceparent`/`tracestate` metadata)
    └─ submit                      gateway: SubmitJob / SubmitJobs (gateway/submit_tracing.py)
       ├─ queue wait               executor: from the job's creation (or, for a retry,
       │                           its return to the line) to the attempt's start
       └─ attempt                  executor: one per attempt
          └─ step                  executor: one per browser step

The link across the services is the job itself: the gateway stores the submit span's
context with the job (the hash field `trace`, written by create.lua; `job_trace`), and
the executor's claim reads it back (claim_job in lua/includes/executor.lua; `attempt`).
With tracing off nothing is recorded, and a client's own traceparent is still kept with
its job (an executor that traces continues the client's trace); a job submitted without
one costs nothing.

Spans are exported by OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); the other standard OTEL_* variables apply
(OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_BSP_SCHEDULE_DELAY, ...). Every log line
written while a span is current carries its `trace_id` and `span_id` (conveyor/logs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from conveyor.store.records import Claim

log = structlog.get_logger("conveyor.tracing")

SUBMIT_SPAN = "submit"
QUEUE_WAIT_SPAN = "queue wait"
ATTEMPT_SPAN = "attempt"
STEP_SPAN = "step"
#: The gRPC methods whose calls get a submit span.
#: How long shutting down waits for the last spans to be exported.
SHUTDOWN_SECONDS = 5.0

_PROPAGATOR = TraceContextTextMapPropagator()
_NULL: AbstractContextManager[None] = contextlib.nullcontext()

_tracer: otel_trace.Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether this process records spans (setup() turned tracing on)."""
    return _tracer is not None


def tracer() -> otel_trace.Tracer | None:
    """This process's tracer, once setup() turned tracing on."""
    return _tracer


def setup(settings: Settings, service: str) -> bool:
    """Turn tracing on for this process if CONVEYOR_TRACING=on: a tracer provider named
    for `service` (OTEL_SERVICE_NAME wins), exporting in batches by OTLP/HTTP. Returns
    whether tracing is on. Calling it again changes nothing."""
    global _tracer, _provider
    if settings.tracing != "on":
        return False
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # The global provider too: a kind's handler that traces with the OpenTelemetry API
    # records into the attempt's trace.
    otel_trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("conveyor")
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or "http://localhost:4318 (the default)")
    log.info("tracing on", exporter="otlp/http", endpoint=endpoint)
    return True


async def shutdown() -> None:
    """Export what is left and stop (bounded: an unreachable collector does not hold
    the process up for longer than SHUTDOWN_SECONDS)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(provider.shutdown), SHUTDOWN_SECONDS)
    except TimeoutError:
        log.warning("tracing: the last spans were not exported in time")


# ---- propagation ---------------------------------------------------------------------------


def encode(context: Context | None = None) -> str:
    """A context's span as kept with a job: its traceparent, and after a space its
    tracestate when it has one ('' for no valid span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    parent = carrier.get("traceparent", "")
    state = carrier.get("tracestate", "")
    return f"{parent} {state}" if parent and state else parent


def decode(stored: str) -> Context | None:
    """The context a job's stored trace (see encode) names; None for none or garbage."""
    if not stored:
        return None
    parent, _, state = stored.partition(" ")
    carrier = {"traceparent": parent, "tracestate": state} if state else {"traceparent": parent}
    context = _PROPAGATOR.extract(carrier)
    return context if otel_trace.get_current_span(context).get_span_context().is_valid else None


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context | None:
    """The client's context from gRPC call metadata (W3C traceparent and tracestate);
    None when it sent none (or one that does not parse)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if key in ("traceparent", "tracestate"):
            carrier[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
    if "traceparent" not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if otel_trace.get_current_span(context).get_span_context().is_valid else None


def job_trace(context: Any) -> str:
    """The trace context to keep with the jobs a submit call makes (`context`: its
    ServicerContext): the current span's (the submit span) when tracing is on; with it
    off, the client's own context, if it sent one; else ''."""
    if _tracer is not None:
        return encode()
    client = from_metadata(context.invocation_metadata())
    return encode(client) if client is not None else ""


def attempt(claim: Claim) -> AbstractContextManager[None]:
    """The `attempt` span of a claimed job (current while it runs), a child of the
    context stored with the job, after its `queue wait` span; nothing when tracing is
    off."""
    if _tracer is None:
        return _NULL
    return _attempt(_tracer, claim)


@contextlib.contextmanager
def _attempt(tracer: otel_trace.Tracer, claim: Claim) -> Iterator[None]:
    now_ns = time.time_ns()
    parent = decode(claim.trace)
    waited_from_ns = min(claim.waited_from_ms * 1_000_000, now_ns) if claim.waited_from_ms else now_ns
    attributes: dict[str, Any] = {
        "conveyor.job.id": claim.job_id, "conveyor.queue": claim.queue, "conveyor.kind": claim.kind,
        "conveyor.attempt": claim.attempt, "conveyor.attempt_limit": claim.attempt_limit,
    }
    if parent is not None:
        # Recorded now that it is over, with the time it began (its attempt says the rest).
        tracer.start_span(QUEUE_WAIT_SPAN, context=parent, start_time=waited_from_ns, attributes={
            "conveyor.job.id": claim.job_id, "conveyor.attempt": claim.attempt}).end(end_time=now_ns)
    attributes["conveyor.queue_wait_ms"] = (now_ns - waited_from_ns) // 1_000_000
    with tracer.start_as_current_span(ATTEMPT_SPAN, context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes, start_time=now_ns):
        yield


def outcome(state: str, reason: str = "", message: str = "") -> None:
    """Say how the current attempt ended, on its span: `state` (completed, failed,
    retrying, cancelled...), and the error's reason and message when it failed."""
    span = otel_trace.get_current_span()
    if _tracer is None or not span.is_recording():
        return
    span.set_attribute("conveyor.outcome", state)
    if reason:
        span.set_attribute("conveyor.error.reason", reason)
        span.set_status(Status(StatusCode.ERROR, f"{reason}: {message}"[:500]))


def step(index: int, step: Any, name_of: Callable[[Any], str]) -> AbstractContextManager[None]:
    """The span of browser step `index` (a task_pb2.Step; `name_of` gives its display
    name), a child of the current attempt span; nothing when tracing is off. A step
    that raises ends with its span's status ERROR."""
    if _tracer is None:
        return _NULL
    return _step(_tracer, index, name_of(step), step.WhichOneof("action") or "")


@contextlib.contextmanager
def _step(tracer: otel_trace.Tracer, index: int, name: str, action: str) -> Iterator[None]:
    attributes: dict[str, Any] = {"conveyor.step.index": index, "conveyor.step.name": name,
                                  "conveyor.step.action": action}
    with tracer.start_as_current_span(STEP_SPAN, attributes=attributes):
        yield


def step_failed(reason: str, message: str) -> None:
    """Mark the current step's span as failed (a soft step that failed, the job going on)."""
    span = otel_trace.get_current_span()
    if _tracer is not None and span.is_recording():
        span.set_attribute("conveyor.error.reason", reason)
        span.set_status(Status(StatusCode.ERROR, f"{reason}: {message}"[:500]))
