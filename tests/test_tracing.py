"""Traces (CONVEYOR_TRACING=on): one browser job submitted through the SDK inside a
client's span is one trace across the gateway and the executor (submit, queue wait,
attempt, a span per step), exported by OTLP/HTTP to a collector the test runs on
loopback; the services' log lines carry the trace id. And the store keeps a job's
trace context with it (only when it has one) and gives it back with the claim."""

from __future__ import annotations

import gzip
import http.server
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider

from conveyor import tracing
from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Priority
from conveyor.transport import kind_queue
from conveyor.v1 import job_pb2
from conveyor_client.sync import ConveyorClient
from tests.support.processes import Stack, wait_for

PAGE = b"<html><title>traced</title><input id='name'><h1 id='out'>Hello traces</h1></html>"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace collector on loopback that also serves the job's page."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.daemon_threads = True
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def received(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        got: list[Span] = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                    s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                                    {a.key: _value(a.value) for a in s.attributes}))
        with self.server.lock:
            self.server.spans.extend(got)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, name="otlp-collector", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def log_lines(p: Any) -> list[dict[str, Any]]:
    lines = []
    for line in p.log().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def test_a_browser_job_is_one_trace_across_gateway_and_executor(
    make_stack: Callable[..., Stack], collector: Collector
) -> None:
    stack = make_stack(
        CONVEYOR_TRACING="on", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100",
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        CONVEYOR_EXECUTOR_SLOTS="2", CONVEYOR_MAX_CONCURRENT_BROWSERS="1",
    )
    stack.start_gateway()
    stack.start_executor()
    # The client's own tracing: an SDK provider of the test's (no exporter needed).
    tracer = TracerProvider().get_tracer("test-client")
    queue = f"traced-{uuid.uuid4().hex[:6]}"
    page = f"{collector.url}/page.html"
    with ConveyorClient(stack.grpc_target) as client:
        with tracer.start_as_current_span("client work") as client_span:
            submitted = client.submit({"queue": queue, "browser": {"steps": [
                {"navigate": {"url": page}},
                {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
                {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
            ]}})
        with tracer.start_as_current_span("client batch") as batch_span:
            batch = client.submit_many([{"queue": queue, "noop": {}}, {"queue": queue, "noop": {}}])
        job = client.wait(submitted.id, timeout=60)
        assert job.state == job_pb2.JOB_STATE_COMPLETED, job
        assert job.result.values["greeting"].string_value == "Hello traces"
        batch_ids = [r.id for r in batch.results]
        for job_id in batch_ids:
            assert client.wait(job_id, timeout=30).state == job_pb2.JOB_STATE_COMPLETED
    trace_id = format(client_span.get_span_context().trace_id, "032x")
    client_id = format(client_span.get_span_context().span_id, "016x")

    def of_job(job_id: str) -> list[Span]:
        return [s for s in collector.received() if s.attributes.get("conveyor.job.id") == job_id]

    def arrived() -> bool:
        names = [s.name for s in collector.received() if s.trace_id == trace_id]
        return names.count("step") == 3 and {"submit", "queue wait", "attempt"} <= set(names) and all(
            {"queue wait", "attempt"} <= {s.name for s in of_job(i)} for i in batch_ids)

    wait_for(arrived, 30, "the job's spans at the collector", interval=0.1)
    spans = [s for s in collector.received() if s.trace_id == trace_id]
    by_name: dict[str, list[Span]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (submit,) = by_name["submit"]
    (wait,) = by_name["queue wait"]
    (attempt,) = by_name["attempt"]
    steps = sorted(by_name["step"], key=lambda s: s.attributes["conveyor.step.index"])
    # The client's span is the parent of the gateway's submit; the executor's spans hang under it.
    assert submit.parent_id == client_id and submit.service == "conveyor-gateway"
    assert submit.attributes["conveyor.job.id"] == submitted.id
    assert submit.attributes["rpc.method"] == "SubmitJob"
    assert wait.parent_id == submit.span_id and wait.service == "conveyor-executor"
    assert attempt.parent_id == submit.span_id and attempt.service == "conveyor-executor"
    assert attempt.attributes["conveyor.job.id"] == submitted.id and attempt.attributes["conveyor.attempt"] == 1
    assert attempt.attributes["conveyor.outcome"] == "completed"
    assert [s.parent_id for s in steps] == [attempt.span_id] * 3
    assert [s.attributes["conveyor.step.action"] for s in steps] == ["navigate", "fill", "extract"]
    # In time: the wait starts at the job's creation (after the submit began; the store
    # keeps milliseconds) and ends as the attempt starts; the steps run inside the
    # attempt, one after another.
    assert submit.start_ns - 1_000_000 <= wait.start_ns <= submit.end_ns
    assert wait.start_ns <= wait.end_ns <= attempt.start_ns
    assert attempt.start_ns <= steps[0].start_ns and steps[-1].end_ns <= attempt.end_ns
    assert all(a.end_ns <= b.start_ns for a, b in itertools.pairwise(steps))
    # SubmitJobs: one submit span for the batch, each job's attempt under it.
    batch_trace = format(batch_span.get_span_context().trace_id, "032x")
    (batch_submit,) = [s for s in collector.received() if s.trace_id == batch_trace and s.name == "submit"]
    assert batch_submit.parent_id == format(batch_span.get_span_context().span_id, "016x")
    assert batch_submit.attributes["conveyor.jobs.count"] == 2
    for job_id in batch_ids:
        (batch_attempt,) = [s for s in of_job(job_id) if s.name == "attempt"]
        assert (batch_attempt.trace_id, batch_attempt.parent_id) == (batch_trace, batch_submit.span_id)
    # The executor's lines about the job, written while its spans were current, carry the trace.
    (executor,) = stack.executors
    lines = [line for line in log_lines(executor) if line.get("job_id") == submitted.id]
    events = {line["event"] for line in lines}
    assert {"job started", "browser_task_completed", "job completed"} <= events, events
    assert all(line.get("trace_id") == trace_id for line in lines), lines
    assert {line.get("span_id") for line in lines if line["event"] == "job started"} == {attempt.span_id}


async def test_the_store_keeps_a_trace_context_only_for_a_job_that_has_one(store: JobStore) -> None:
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    stored = f"{traceparent} vendor=abc"
    assert tracing.decode(stored) is not None and tracing.encode(tracing.decode(stored)) == stored
    assert tracing.decode("not a traceparent") is None

    class Call:  # what a submit's ServicerContext gives the gateway: the call's metadata
        def __init__(self, *metadata: tuple[str, str]) -> None:
            self.metadata = metadata

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.metadata

    # With tracing off (as in this process), a client's context is kept as it sent it.
    assert not tracing.enabled()
    assert tracing.job_trace(Call(("traceparent", traceparent), ("tracestate", "vendor=abc"))) == stored
    assert tracing.job_trace(Call(("authorization", "Bearer x"))) == ""
    assert tracing.job_trace(Call(("traceparent", "00-garbage"))) == ""

    def new(trace: str = "") -> NewJob:
        return NewJob(id=uuid.uuid4().hex, queue="q", owner="t", priority=Priority.NORMAL, max_attempts=2,
                      timeout_ms=60_000, run_at_ms=0, spec=b"", kind="noop", trace=trace)

    traced, plain, claimed_by_actor = new(stored), new(), new(stored)
    for job in (traced, plain, claimed_by_actor):
        await store.submit(job)
    # A job without a trace context has no field for it (nothing stored, nothing read).
    assert await store.client.hget(store.keys.job(traced.id), "trace") == stored.encode()
    assert not await store.client.hexists(store.keys.job(plain.id), "trace")
    await store.heartbeat("w1", 3, 60_000, 60_000, {}, [], kinds=["noop"])
    assert len(await store.dispatch(10)) == 3
    # The actor's own claim (claim.lua) gives it back too; the take (take.lua) claims the rest.
    claim = await store.claim(claimed_by_actor.id, 1, "w1", 60_000)
    assert not isinstance(claim, str) and claim.trace == stored
    taken = await store.take(10, "w1", 60_000, [kind_queue("noop")])
    claims = {m.claim.job_id: m.claim for m in taken.messages if m.claim is not None}
    assert claims[traced.id].trace == stored and claims[plain.id].trace == ""
    # The first attempt waited from the job's creation.
    for job_id in (traced.id, plain.id):
        record = await store.get(job_id)
        assert claims[job_id].waited_from_ms == record.created_ms > 0
