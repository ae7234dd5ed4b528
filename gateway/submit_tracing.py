"""The gateway's `submit` span (CONVEYOR_TRACING=on): SubmitJob and SubmitJobs run in
it, a child of the client's context from the call's metadata (a root without one); it
sits outside the error interceptor, so it sees the code the call ended with. The rest
of the trace: conveyor/tracing.py."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from conveyor import tracing
from gateway.interceptors import WrappingInterceptor

SUBMIT_METHODS = frozenset({"/conveyor.v1.JobService/SubmitJob", "/conveyor.v1.JobService/SubmitJobs"})


class SubmitTracing(WrappingInterceptor):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method not in SUBMIT_METHODS or handler.unary_unary is None:
            return handler
        return _traced_unary(method, handler)


def _traced_unary(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary
    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        tracer = tracing.tracer()
        if tracer is None:
            return await inner(request, context)
        parent = tracing.from_metadata(context.invocation_metadata())
        with tracer.start_as_current_span(tracing.SUBMIT_SPAN, context=parent, kind=SpanKind.SERVER,
                                          attributes=attributes, record_exception=False,
                                          set_status_on_exception=False) as span:
            try:
                response = await inner(request, context)
            except BaseException as exc:
                _end_submit(span, context, exc)
                raise
            _end_submit(span, context, None)
            _describe_submit(span, response)
            return response

    return grpc.unary_unary_rpc_method_handler(
        unary_unary, handler.request_deserializer, handler.response_serializer)


def _end_submit(span: otel_trace.Span, context: grpc.aio.ServicerContext, exc: BaseException | None) -> None:
    """The call's gRPC code on the submit span; ERROR for any code but OK."""
    code = context.code()
    if code in (None, 0, grpc.StatusCode.OK) and exc is not None:
        code = grpc.StatusCode.CANCELLED if isinstance(exc, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN
    code_name = str(getattr(code, "name", None) or "OK")
    span.set_attribute("rpc.grpc.status_code", code_name)
    if code_name != "OK":
        span.set_status(Status(StatusCode.ERROR, f"{code_name}: {context.details() or exc or ''}"[:500]))


def _describe_submit(span: otel_trace.Span, response: Any) -> None:
    """The job (SubmitJob) or the jobs' count (SubmitJobs) on the submit span."""
    job_id = getattr(response, "id", "")
    if job_id:
        span.set_attribute("conveyor.job.id", job_id)
        span.set_attribute("conveyor.job.existing", bool(getattr(response, "existing", False)))
    results = getattr(response, "results", None)
    if results is not None:
        span.set_attribute("conveyor.jobs.count", sum(1 for r in results if r.id))


# ---- the executor's spans ------------------------------------------------------------------
