"""API keys: each names a tenant and a role. A key's secret is shown once, at
creation; the store keeps only its SHA-256 (a secret is 32 random bytes, so a fast
hash is what fits), under which a gateway finds the key while it is not revoked."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from conveyor.store.keys import Keys
from conveyor.store.records import int_of, text_of
from conveyor.store.replies import refused
from conveyor.store.scripts import library

#: What every secret starts with (so that a leaked one is recognisable), then the key id.
SECRET_PREFIX = "cvk"
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: A key's id, as create() makes it: 16 hex digits.
KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class Role(IntEnum):
    """What a key may do; each role may do what the ones below it may (the values
    are those of the contract's Role enum)."""

    VIEWER = 1
    SUBMITTER = 2
    OPERATOR = 3
    ADMIN = 4


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    tenant: str
    role: Role
    created_ms: int
    revoked_ms: int = 0
    created_by: str = ""

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> KeyRecord:
        return cls(
            id=text_of(h.get(b"id")), name=text_of(h.get(b"name")), tenant=text_of(h.get(b"tenant")),
            role=Role(int_of(h.get(b"role")) or Role.VIEWER), created_ms=int_of(h.get(b"created")),
            revoked_ms=int_of(h.get(b"revoked")), created_by=text_of(h.get(b"created_by")),
        )

    @classmethod
    def from_flat(cls, flat: list[bytes]) -> KeyRecord:
        return cls.from_hash({flat[i]: flat[i + 1] for i in range(0, len(flat), 2)})


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Compare secrets in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


class KeyStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client: Any = client
        self.keys = Keys(prefix)
        self.prefix = prefix
        self._library = library()

    async def _run(self, name: str, *args: Any) -> Any:
        try:
            return await self._library.call(self.client, name, [self.prefix, *args])
        except ResponseError as exc:
            raise refused(exc) from None

    async def create(self, tenant: str, role: Role, name: str, *, created_by: str) -> tuple[KeyRecord, str]:
        """A new key and its secret (the only time the secret is seen)."""
        key_id = secrets.token_hex(8)
        secret = f"{SECRET_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        flat = await self._run("key_create", key_id, secret_hash(secret), tenant, int(role), name, created_by)
        return KeyRecord.from_flat(flat), secret

    async def find(self, secret: str) -> KeyRecord | None:
        """The live key whose secret this is; None for an unknown or revoked one."""
        key_id = await self.client.get(self.keys.api_key_hash(secret_hash(secret)))
        if key_id is None:
            return None
        h = await self.client.hgetall(self.keys.api_key(key_id.decode()))
        if not h or h.get(b"revoked"):
            return None
        return KeyRecord.from_hash(h)

    async def list_keys(self, tenant: str = "") -> list[KeyRecord]:
        ids = [i.decode() for i in await self.client.zrange(self.keys.api_keys, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(self.keys.api_key(key_id))
        records = [KeyRecord.from_hash(h) for h in await pipe.execute() if h]
        return [r for r in records if not tenant or r.tenant == tenant]

    async def revoke(self, key_id: str, *, revoked_by: str) -> KeyRecord:
        return KeyRecord.from_flat(await self._run("key_revoke", key_id, revoked_by))
