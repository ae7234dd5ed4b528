"""The dashboard's way into the gateway: the very servicers the gRPC server serves,
called in-process, each call first through the gateway's own guard (the
Authenticator: the caller's API key, METHOD_ROLES). So one copy of the rules
decides what a dashboard user sees and may do — the tenant filter of ListJobs and
WatchQueue, NOT_FOUND for another tenant's job, the role each action needs — and a
refusal is the same domain error a gRPC client gets, answered as HTTP here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf.message import Message
from google.rpc import code_pb2
from redis.exceptions import RedisError

from conveyor.errors import ConveyorError
from conveyor.store.key_store import Role
from gateway.auth import METHOD_ROLES
from gateway.errors import ResourceUnavailable, to_status

log = structlog.get_logger("gateway.dashboard")

PACKAGE = "/conveyor.v1."
#: The guard of every call, as the gRPC interceptor runs it: (method, context) -> None.
Guard = Callable[[str, Any], Awaitable[None]]

#: google.rpc codes as HTTP statuses (the mapping google.rpc.Code documents).
HTTP_STATUS: dict[int, int] = {
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.UNAVAILABLE: 503,
}


class CallContext:
    """What a servicer (and the guard) reads of the call it serves, for a call the
    dashboard makes on behalf of a browser: the caller's key as its metadata."""

    def __init__(self, secret: str) -> None:
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {secret}"),) if secret else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        return None  # no headers to send: the HTTP response has its own

    def cancelled(self) -> bool:
        return False


@dataclass(frozen=True)
class CallError(Exception):
    """A call refused: the HTTP status and the JSON body the dashboard answers with."""

    status: int
    body: dict[str, Any]


def call_error(exc: BaseException, method: str) -> CallError:
    """`exc`, raised by the guard or a servicer, as the gRPC error interceptor would
    map it: a domain error keeps its code and reason; an unreachable store is
    UNAVAILABLE; anything else is an internal error (logged)."""
    if isinstance(exc, (RedisError, OSError)):
        log.warning("store unavailable", method=method, error=f"{type(exc).__name__}: {exc}"[:1000])
        exc = ResourceUnavailable("the job store is unreachable right now; retry shortly")
    if isinstance(exc, ConveyorError):
        status = to_status(exc)
        code = code_pb2.Code.Name(status.code)
        log.info("dashboard request refused", method=method, code=code, error=status.message)
        body: dict[str, Any] = {"code": code, "message": status.message, "reason": exc.reason}
        violations = getattr(exc, "violations", None)
        if violations:
            body["violations"] = [{"field": v.field, "description": v.description} for v in violations]
        return CallError(HTTP_STATUS.get(status.code, 500), body)
    log.error("dashboard request failed", method=method, exc_info=exc)
    return CallError(500, {"code": "INTERNAL", "message": "internal error", "reason": "INTERNAL"})


class Calls:
    """The servicers by service name (`JobService`, ...), called as the gRPC server
    calls them: guard first, then the handler, errors mapped."""

    def __init__(self, guard: Guard, servicers: dict[str, Any]) -> None:
        self._guard = guard
        self._servicers = servicers

    def _handler(self, method: str) -> Callable[..., Any]:
        service, _, name = method.partition("/")
        return getattr(self._servicers[service], name)  # type: ignore[no-any-return]

    async def unary(self, secret: str, method: str, request: Message) -> Any:
        """`method` ("JobService/GetJob") for the caller whose key is `secret`."""
        context = CallContext(secret)
        try:
            await self._guard(PACKAGE + method, context)
            return await self._handler(method)(request, context)
        except CallError:
            raise
        except Exception as exc:
            raise call_error(exc, method) from None

    async def stream(self, secret: str, method: str, request: Message) -> AsyncIterator[Any]:
        """A server-streaming `method`'s messages, for the caller whose key is `secret`."""
        context = CallContext(secret)
        try:
            await self._guard(PACKAGE + method, context)
            messages = self._handler(method)(request, context)
            async with contextlib.aclosing(messages) as each:
                async for message in each:
                    yield message
        except CallError:
            raise
        except Exception as exc:
            raise call_error(exc, method) from None


def allowed_methods(role: Role) -> dict[str, bool]:
    """Which Conveyor RPCs a role may call, from METHOD_ROLES itself (what the page
    uses to hide buttons; the server refuses anyway)."""
    return {method.removeprefix(PACKAGE): role >= needed for method, needed in METHOD_ROLES.items()}


def may(role: Role, method: str) -> bool:
    return role >= METHOD_ROLES.get(PACKAGE + method, Role.ADMIN)

