"""The one place domain errors become gRPC statuses, with google.rpc details:
ErrorInfo always, BadRequest field violations for INVALID_ARGUMENT, RetryInfo for
RESOURCE_EXHAUSTED and UNAVAILABLE. Servicers raise; this interceptor maps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis.exceptions import RedisError

from conveyor.errors import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from conveyor.statuses import ERROR_DOMAIN

log = structlog.get_logger("gateway.errors")

CODES: dict[type[ConveyorError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    Unavailable: code_pb2.UNAVAILABLE,
    OutOfRange: code_pb2.OUT_OF_RANGE,
}


def _pack(msg: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


class ResourceUnavailable(Unavailable):
    """Unavailable with a retry delay: a transient store failure."""

    reason = "STORE_UNAVAILABLE"
    retry_after_seconds = 1.0


def to_status(exc: ConveyorError) -> status_pb2.Status:
    code = next((c for t, c in CODES.items() if isinstance(exc, t)), code_pb2.INTERNAL)
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata))]
    if isinstance(exc, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, (ResourceExhausted, ResourceUnavailable)):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after_seconds * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code, message=exc.message, details=details)


def internal_status() -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, (RedisError, OSError)):
        log.warning("store unavailable", method=method, error=f"{type(exc).__name__}: {exc}")
        exc = ResourceUnavailable("the job store is unreachable right now; retry shortly")
    if isinstance(exc, ConveyorError):
        status = to_status(exc)
        log.info("request refused", method=method, code=code_pb2.Code.Name(status.code), error=exc.message)
    else:
        log.exception("request failed", method=method)
        status = internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner_uu(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for item in inner_us(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
