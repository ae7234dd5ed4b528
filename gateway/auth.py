"""Who is calling, and may they: API keys (bearer metadata) map to a tenant and a
role; every Conveyor RPC needs at least the role METHOD_ROLES names; health and
reflection are open. The caller of the call being served is `caller()`.

With CONVEYOR_AUTH=off (only for a gateway on loopback, or when told it is insecure)
every caller is the `default` tenant's admin. The bootstrap admin key
(CONVEYOR_ADMIN_KEY) is an admin of the `default` tenant, checked in memory; keys
made with CreateKey live in the store (hashed) and are re-read after
CACHE_SECONDS, so a revoked key stops working on every gateway within that."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

import grpc
import structlog

from conveyor.errors import PermissionDenied, Unauthenticated
from conveyor.store.key_store import KeyStore, Role, same_secret

log = structlog.get_logger("gateway.auth")

#: How long a key, once checked, is trusted without asking the store again.
CACHE_SECONDS = 2.0
DEFAULT_TENANT = "default"
BOOTSTRAP_KEY_ID = "bootstrap"

_SERVICE = "/conveyor.v1."
#: The least role each RPC needs (a method missing here needs ADMIN: closed by default).
METHOD_ROLES: dict[str, Role] = {
    f"{_SERVICE}JobService/{m}": role
    for role, methods in (
        (Role.VIEWER, ("GetJob", "ListJobs", "WatchJob", "WaitJob", "GetArtifact")),
        (Role.SUBMITTER, ("SubmitJob", "SubmitJobs", "CancelJob", "RetryJob")),
    )
    for m in methods
} | {
    f"{_SERVICE}QueueService/{m}": role
    for role, methods in (
        (Role.VIEWER, ("ListQueues", "GetQueue", "WatchQueue")),
        (Role.OPERATOR, ("PauseQueue", "ResumeQueue", "UpdateQueue", "CleanQueue", "RetryFailedJobs")),
        (Role.ADMIN, ("ListWorkers",)),
    )
    for m in methods
} | {
    f"{_SERVICE}ScheduleService/{m}": role
    for role, methods in (
        (Role.VIEWER, ("ListSchedules", "GetSchedule")),
        (Role.SUBMITTER, ("CreateSchedule", "DeleteSchedule", "PauseSchedule", "ResumeSchedule")),
    )
    for m in methods
} | {
    f"{_SERVICE}SessionService/{m}": role
    for role, methods in ((Role.VIEWER, ("ListSessions",)), (Role.SUBMITTER, ("DeleteSession",)))
    for m in methods
} | {
    f"{_SERVICE}SuiteService/{m}": role
    for role, methods in (
        (Role.VIEWER, ("GetSuite", "WatchSuite", "GetSuiteReport")),
        (Role.SUBMITTER, ("SubmitSuite",)),
    )
    for m in methods
} | {
    f"{_SERVICE}KeyService/{m}": role
    for role, methods in ((Role.VIEWER, ("WhoAmI",)), (Role.ADMIN, ("CreateKey", "ListKeys", "RevokeKey")))
    for m in methods
}


@dataclass(frozen=True)
class Caller:
    tenant: str
    role: Role
    key_id: str = ""

    @property
    def sees_every_tenant(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, owner: str) -> bool:
        """Whether something of tenant `owner` exists for this caller."""
        return self.sees_every_tenant or owner == self.tenant


#: The caller when auth is off: the default tenant's admin.
ANONYMOUS_ADMIN = Caller(DEFAULT_TENANT, Role.ADMIN)
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("conveyor_caller", default=ANONYMOUS_ADMIN)


def caller() -> Caller:
    """The caller of the RPC being served (set by the guard before its handler runs)."""
    return _caller.get()


def bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


class Authenticator:
    """The guard of every call: finds the caller from its key and checks its role."""

    def __init__(self, keys: KeyStore | None, *, admin_key: str = "") -> None:
        self._keys = keys  # None: auth is off
        self._admin_key = admin_key
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    async def _lookup(self, secret: str) -> Caller | None:
        if self._admin_key and same_secret(secret, self._admin_key):
            return Caller(DEFAULT_TENANT, Role.ADMIN, BOOTSTRAP_KEY_ID)
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        assert self._keys is not None
        record = await self._keys.find(secret)
        found = Caller(record.tenant, record.role, record.id) if record is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[secret] = (now, found)
        return found

    async def __call__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if not method.startswith(_SERVICE):
            return  # health, reflection: open to all
        if self._keys is None:
            _caller.set(ANONYMOUS_ADMIN)
            return
        secret = bearer(context)
        if not secret:
            raise Unauthenticated("send an API key: `authorization: Bearer <key>`", reason="KEY_MISSING")
        who = await self._lookup(secret)
        if who is None:
            raise Unauthenticated("the API key is unknown or revoked", reason="KEY_INVALID")
        needed = METHOD_ROLES.get(method, Role.ADMIN)
        if who.role < needed:
            log.info("permission denied", method=method, key_id=who.key_id, role=who.role.name)
            raise PermissionDenied(
                f"{method.rsplit('/', 1)[-1]} needs the {needed.name.lower()} role; this key is "
                f"{who.role.name.lower()}",
                reason="ROLE_TOO_LOW", metadata={"needed_role": needed.name, "role": who.role.name},
            )
        _caller.set(who)
        structlog.contextvars.bind_contextvars(key_id=who.key_id, tenant=who.tenant)
