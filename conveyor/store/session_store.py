"""Sessions in the store: a browser context's storage state (cookies, local storage)
that a job saved under a name, for its owner's later jobs to start from.

Keys (prefix P): the hash P:session:<owner>:<name> (state JSON, created, expires,
size, job, cookies, origins), expiring with the session; P:sessions:owner:<owner>,
the owner's session names scored by their expiry (ms). Saving and deleting are one
Lua script each (lua/session_*.lua); reads are plain reads. A session is addressed
by (owner, name) and by nothing else, so another tenant's session does not exist for
a caller. Bounded: MAX_SESSION_BYTES per session, MAX_SESSIONS_PER_OWNER per tenant.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from conveyor.browser_options import (
    MAX_SESSION_BYTES,
    MAX_SESSIONS_PER_OWNER,
    SESSION_NAME,
    SESSION_NAME_RULE,
)
from conveyor.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from conveyor.store.records import int_of, json_of, text_of
from conveyor.store.scripts import library


@dataclass(frozen=True)
class SessionInfo:
    owner: str
    name: str
    created_ms: int
    expires_ms: int
    size_bytes: int
    job_id: str
    cookie_count: int
    origins: tuple[str, ...]


@dataclass(frozen=True)
class StoredSession:
    info: SessionInfo
    #: Playwright's storage state: {"cookies": [...], "origins": [...]}.
    state: dict[str, Any]


def check_session_name(name: str, field: str = "name") -> str:
    if not SESSION_NAME.match(name):
        raise InvalidArgument(FieldViolation(field, f"a session name: {SESSION_NAME_RULE}"))
    return name


def session_not_found(name: str) -> NotFound:
    return NotFound(f"session {name!r} not found (or expired)", reason="SESSION_NOT_FOUND",
                    metadata={"session": name})


def _info(owner: str, name: str, h: dict[bytes, bytes]) -> SessionInfo:
    origins = json_of(h.get(b"origins"), [])
    return SessionInfo(
        owner=owner, name=name, created_ms=int_of(h.get(b"created")), expires_ms=int_of(h.get(b"expires")),
        size_bytes=int_of(h.get(b"size")), job_id=text_of(h.get(b"job")),
        cookie_count=int_of(h.get(b"cookies")),
        origins=tuple(str(o) for o in origins) if isinstance(origins, list) else (),
    )


class SessionStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._library = library()

    def key(self, owner: str, name: str) -> str:
        """A saved session (lua: k_session)."""
        return f"{self.prefix}:session:{owner}:{name}"

    def index_key(self, owner: str) -> str:
        """An owner's sessions by expiry (lua: k_owner_sessions)."""
        return f"{self.prefix}:sessions:owner:{owner}"

    async def save(self, owner: str, name: str, state: dict[str, Any], *, ttl_ms: int, job_id: str) -> SessionInfo:
        """Save (or replace) the owner's session `name`. ResourceExhausted when the
        state is too large or the owner has the most sessions already."""
        data = json.dumps(state, separators=(",", ":"))
        size = len(data.encode())
        if size > MAX_SESSION_BYTES:
            raise ResourceExhausted(
                f"the session's storage state is {size} bytes; at most {MAX_SESSION_BYTES}",
                reason="SESSION_TOO_LARGE",
            )
        cookies = len(state.get("cookies") or [])
        origins = [str(o.get("origin", "")) for o in state.get("origins") or [] if isinstance(o, dict)]
        reply = await self._library.call(self.client, "session_save", [
            self.prefix, owner, name, data, ttl_ms, job_id, MAX_SESSIONS_PER_OWNER, cookies, json.dumps(origins)])
        if int(reply[0]) == 0:
            raise ResourceExhausted(
                f"tenant {owner!r} has {int(reply[1])} sessions; at most {MAX_SESSIONS_PER_OWNER} (delete some)",
                reason="SESSION_LIMIT",
            )
        return SessionInfo(owner, name, int(reply[2]), int(reply[1]), size, job_id, cookies, tuple(origins))

    async def get(self, owner: str, name: str) -> StoredSession:
        """The owner's live session `name`; NotFound (SESSION_NOT_FOUND) when there is none."""
        raw: dict[Any, Any] = await self.client.hgetall(self.key(owner, name))
        h: dict[bytes, bytes] = raw
        if not h or int_of(h.get(b"expires")) <= int(time.time() * 1000):
            raise session_not_found(name)
        state = json_of(h.get(b"state"), None)
        if not isinstance(state, dict):
            raise session_not_found(name)
        return StoredSession(_info(owner, name, h), state)

    async def list_sessions(self, owner: str) -> list[SessionInfo]:
        """The owner's live sessions, by name."""
        now = int(time.time() * 1000)
        rows: list[Any] = await self.client.zrangebyscore(self.index_key(owner), now + 1, "+inf")
        names = [bytes(n).decode() for n in rows]
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        fields = ("created", "expires", "size", "job", "cookies", "origins")
        for name in sorted(names):
            pipe.hmget(self.key(owner, name), fields)
        out = []
        for name, values in zip(sorted(names), await pipe.execute(), strict=True):
            h = {f.encode(): v for f, v in zip(fields, values, strict=True) if v is not None}
            if h and int_of(h.get(b"expires")) > now:
                out.append(_info(owner, name, h))
        return out

    async def delete(self, owner: str, name: str) -> None:
        if not int(await self._library.call(self.client, "session_delete", [self.prefix, owner, name])):
            raise session_not_found(name)
