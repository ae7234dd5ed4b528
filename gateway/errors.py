"""The one place domain errors become gRPC statuses, with google.rpc details:
ErrorInfo always, BadRequest field violations for INVALID_ARGUMENT, RetryInfo for
RESOURCE_EXHAUSTED and UNAVAILABLE. Servicers raise; this interceptor maps.

Every handler passes through `ErrorInterceptor`, whatever its shape: unary or
streaming requests, responses returned, yielded by an async generator or written
with `context.write` by a coroutine (grpc's own health servicer does that). Request
bytes that do not decode are refused with INVALID_ARGUMENT (MALFORMED_REQUEST).

A status never echoes unbounded input: `to_status` caps every text it carries, so
the serialized google.rpc.Status (the `grpc-status-details-bin` trailer) stays under
`MAX_STATUS_BYTES` whatever the error was built from."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from conveyor.statuses import ERROR_DOMAIN
from gateway.interceptors import WrappingInterceptor

log = structlog.get_logger("gateway.errors")

CODES: dict[type[ConveyorError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    Unavailable: code_pb2.UNAVAILABLE,
    OutOfRange: code_pb2.OUT_OF_RANGE,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
}

# Caps, in UTF-8 bytes, on what a status carries. Worst case, every one of them full
# of 4-byte characters: message 400, ErrorInfo 64 + 8 * (40 + 120), BadRequest
# 17 * (100 + 200), with framing about 7.3 KB, under MAX_STATUS_BYTES.
MAX_STATUS_BYTES = 8 * 1024
MAX_MESSAGE_BYTES = 400
MAX_REASON_BYTES = 64
MAX_METADATA_ENTRIES = 8
MAX_METADATA_KEY_BYTES = 40
MAX_METADATA_VALUE_BYTES = 120
#: Violations listed one by one; past that, one more says how many were left out.
MAX_VIOLATIONS = 16
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 200
ELLIPSIS = "…"


def _pack(msg: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def cap(text: str, max_bytes: int) -> str:
    """`text`, or as much of it as fits in `max_bytes` of UTF-8 with an ellipsis
    (never cutting a character in two)."""
    data = text.encode("utf-8", errors="replace")  # a lone surrogate becomes "?"
    if len(data) <= max_bytes:
        return text if text.isascii() else data.decode("utf-8")
    room = max_bytes - len(ELLIPSIS.encode())
    return data[:room].decode("utf-8", errors="ignore") + ELLIPSIS


def _capped_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    items = list(metadata.items())[:MAX_METADATA_ENTRIES]
    return {cap(k, MAX_METADATA_KEY_BYTES): cap(v, MAX_METADATA_VALUE_BYTES) for k, v in items}


def _capped_violations(violations: list[FieldViolation]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out = [
        error_details_pb2.BadRequest.FieldViolation(
            field=cap(v.field, MAX_FIELD_BYTES), description=cap(v.description, MAX_DESCRIPTION_BYTES)
        )
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        more = len(violations) - MAX_VIOLATIONS
        out.append(error_details_pb2.BadRequest.FieldViolation(
            field="request", description=f"{more} more violation{'s' if more > 1 else ''} not listed"))
    return out


class ResourceUnavailable(Unavailable):
    """Unavailable with a retry delay: a transient store failure."""

    reason = "STORE_UNAVAILABLE"
    retry_after_seconds = 1.0


class MalformedRequest(InvalidArgument):
    """The request's bytes are not a message of the method's request type."""

    reason = "MALFORMED_REQUEST"


def to_status(exc: ConveyorError) -> status_pb2.Status:
    code = next((c for t, c in CODES.items() if isinstance(exc, t)), code_pb2.INTERNAL)
    info = error_details_pb2.ErrorInfo(
        reason=cap(exc.reason, MAX_REASON_BYTES), domain=ERROR_DOMAIN, metadata=_capped_metadata(exc.metadata)
    )
    details = [_pack(info)]
    if isinstance(exc, InvalidArgument):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=_capped_violations(exc.violations))))
    if isinstance(exc, (ResourceExhausted, ResourceUnavailable)):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after_seconds * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(exc, QuotaExceeded):
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=cap(exc.subject, MAX_FIELD_BYTES), description=cap(exc.message, MAX_DESCRIPTION_BYTES)
        )
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
    return status_pb2.Status(code=code, message=cap(exc.message, MAX_MESSAGE_BYTES), details=details)


def internal_status() -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])


def unimplemented_status(method: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="METHOD_NOT_IMPLEMENTED", domain=ERROR_DOMAIN,
                                       metadata={"method": method})
    return status_pb2.Status(
        code=code_pb2.UNIMPLEMENTED, message=f"{method} is not implemented by this server", details=[_pack(info)]
    )


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, (RedisError, OSError)):
        log.warning("store unavailable", method=method, error=cap(f"{type(exc).__name__}: {exc}", 1000))
        exc = ResourceUnavailable("the job store is unreachable right now; retry shortly")
    if isinstance(exc, ConveyorError):
        status = to_status(exc)
        log.info("request refused", method=method, code=code_pb2.Code.Name(status.code), error=status.message)
    elif isinstance(exc, NotImplementedError):
        # What generated servicer base classes raise for a method nobody implemented.
        status = unimplemented_status(method)
        log.info("request refused", method=method, code="UNIMPLEMENTED")
    else:
        log.exception("request failed", method=method)
        status = internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


# ---- undecodable requests ---------------------------------------------------------


class _Malformed:
    """What a request deserializer hands on, instead of raising, for bytes it cannot
    decode: grpc.aio would answer a raising deserializer with UNKNOWN, before any
    handler (or this interceptor) could say otherwise."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Deserializer = Callable[[bytes], Any]


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # any decode failure is the client's
            return _Malformed(exc)

    return deserialize


def _request_type(deserializer: Deserializer | None) -> str:
    """The request message's full name (deserializers are `Message.FromString`)."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the method's request message"))


def _malformed(method: str, request_type: str, bad: _Malformed) -> MalformedRequest:
    exc = MalformedRequest(
        FieldViolation("request", cap(f"not a valid {request_type}: {bad.error}", MAX_DESCRIPTION_BYTES)),
        message=f"the request bytes cannot be decoded as {request_type}",
    )
    exc.metadata = {"method": method, "request_type": request_type}
    return exc


# ---- the interceptor ----------------------------------------------------------------


Handler = Callable[..., Any]


#: What runs before every handler, inside its error mapping (the caller's
#: authentication and the role check): given the method's full name and the call.
Guard = Callable[[str, grpc.aio.ServicerContext], Awaitable[None]]


class _Call:
    """One method's handler, wrapped: request checks, the guard and error mapping
    around it."""

    def __init__(self, method: str, handler: grpc.RpcMethodHandler, guard: Guard | None = None) -> None:
        self.method = method
        self.request_type = _request_type(handler.request_deserializer)
        self.guard = guard

    def check(self, request: Any) -> Any:
        if isinstance(request, _Malformed):
            raise _malformed(self.method, self.request_type, request)
        return request

    async def checked(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.check(request)

    async def unary_response(self, inner: Handler, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if self.guard is not None:
                await self.guard(self.method, context)
            result = inner(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, self.method)

    async def stream_response(self, inner: Handler, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Runs a streaming handler as a coroutine: an async generator's (or a plain
        generator's) messages are written with `context.write`; a coroutine handler
        writes its own."""
        try:
            if self.guard is not None:
                await self.guard(self.method, context)
            result = inner(request, context)
            if hasattr(result, "__aiter__"):
                async with contextlib.aclosing(result) as messages:
                    async for message in messages:
                        await context.write(message)
            elif inspect.isawaitable(result):
                await result
            elif result is not None:
                for message in result:
                    await context.write(message)
        except grpc.aio.AbortError:
            raise
        except grpc.aio.InternalError as exc:
            # What a write raises once the call is over under it: its connection was
            # reset, or the client left, before grpc told the handler so (a cancel).
            # Nobody is there to answer; a call the client ended, not a failure.
            log.info("stream ended by its client", method=self.method, error=cap(str(exc), 300))
            context.set_code(grpc.StatusCode.CANCELLED)
        except Exception as exc:
            if context.cancelled():
                return  # the client went away mid-stream: nobody to answer, nothing failed
            await _abort(context, exc, self.method)


def wrap_handler(method: str, handler: grpc.RpcMethodHandler, guard: Guard | None = None) -> grpc.RpcMethodHandler:
    call = _Call(method, handler, guard)
    deserialize = _tolerant(handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await call.unary_response(lambda r, c: uu(call.check(r), c), request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, deserialize, serialize)
    if handler.unary_stream is not None:
        us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> None:
            await call.stream_response(lambda r, c: us(call.check(r), c), request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)
    if handler.stream_unary is not None:
        su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await call.unary_response(lambda r, c: su(call.checked(r), c), requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
    if handler.stream_stream is not None:
        ss = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
            await call.stream_response(lambda r, c: ss(call.checked(r), c), requests, context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, deserialize, serialize)
    return handler


class ErrorInterceptor(WrappingInterceptor):
    def __init__(self, guard: Guard | None = None) -> None:
        super().__init__()
        self._guard = guard

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(method, handler, self._guard)
