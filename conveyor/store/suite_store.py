"""Suites in the store: a record of which jobs make up a suite, and one pipelined
read of their states.

Keys (prefix P): the hash P:suite:<id> (id, owner, name, created, members: JSON
[[test name, job id, setup 0/1, queue], ...]); it expires with the history it
describes (the jobs' own maximum age). Each member job carries the labels
`suite_id` and `suite_test`. The record is written once, after its jobs were
submitted, and never changed: a suite's progress is read from its jobs' hashes
(bounded: MAX_SUITE_TESTS), so the job state machine knows nothing of suites."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from conveyor.errors import NotFound
from conveyor.store.keys import Keys
from conveyor.store.records import State, int_of, json_of, text_of

MAX_SUITE_TESTS = 1000
MAX_TEST_NAME = 256
SUITE_LABEL = "suite_id"
TEST_LABEL = "suite_test"
#: The job fields a suite's progress needs (and, for its report, the outcome).
PROGRESS_FIELDS = ("state", "attempt", "limit", "max", "started", "ended", "error", "@1:start")
REPORT_FIELDS = (*PROGRESS_FIELDS, "result")


def new_suite_id() -> str:
    """32 hex digits: the creation time (ms) then random bytes, so ids sort by creation."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Member:
    name: str
    job_id: str
    setup: bool
    queue: str


@dataclass(frozen=True)
class SuiteRecord:
    id: str
    owner: str
    name: str
    created_ms: int
    members: tuple[Member, ...]


@dataclass(frozen=True)
class MemberState:
    """What a suite needs of one member job (None fields: the job is gone)."""

    state: State | None
    attempt: int
    attempt_limit: int
    attempts_per_set: int
    started_ms: int
    ended_ms: int
    error: bytes | None
    result: bytes | None = None

    @property
    def attempt_in_set(self) -> int:
        """The attempt's number within its set (RetryJob starts a new set): 2 is the first retry."""
        if not self.attempts_per_set:
            return self.attempt
        return self.attempt - (self.attempt_limit - self.attempts_per_set)


def _member_state(values: list[Any]) -> MemberState:
    h = dict(zip(REPORT_FIELDS, values, strict=False))
    state = text_of(h.get("state"))
    return MemberState(
        state=State(state) if state in State.__members__ else None,
        attempt=int_of(h.get("attempt")), attempt_limit=int_of(h.get("limit")),
        attempts_per_set=int_of(h.get("max")),
        # From the first attempt's start: a flaky test's time is all its attempts'.
        started_ms=int_of(h.get("@1:start")) or int_of(h.get("started")),
        ended_ms=int_of(h.get("ended")), error=h.get("error") or None, result=h.get("result") or None,
    )


class SuiteStore:
    def __init__(self, client: aioredis.Redis, prefix: str, *, keep_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.keep_ms = keep_ms

    def key(self, suite_id: str) -> str:
        return f"{self.prefix}:suite:{suite_id}"

    async def create(self, record: SuiteRecord) -> None:
        members = [[m.name, m.job_id, int(m.setup), m.queue] for m in record.members]
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(record.id), mapping={
            "id": record.id, "owner": record.owner, "name": record.name, "created": record.created_ms,
            "members": json.dumps(members, separators=(",", ":")),
        })
        pipe.pexpire(self.key(record.id), self.keep_ms)
        await pipe.execute()

    async def open_jobs(self, owner: str) -> int:
        """The tenant's open (waiting, delayed or running) jobs now: the count its
        quota of open jobs is checked against (lua: k_tenant(owner) 'open')."""
        raw: Any = await self.client.hget(f"{self.prefix}:tenant:{owner}", "open")
        return int_of(raw)

    async def get(self, suite_id: str, owner: str | None) -> SuiteRecord:
        """The suite, if it exists for `owner` (None: any owner's)."""
        raw: dict[Any, Any] = await self.client.hgetall(self.key(suite_id))
        h: dict[bytes, bytes] = raw
        if not h or (owner is not None and text_of(h.get(b"owner")) != owner):
            raise NotFound(f"suite {suite_id!r} not found", reason="SUITE_NOT_FOUND", metadata={"suite_id": suite_id})
        rows = json_of(h.get(b"members"), [])
        members = tuple(Member(str(r[0]), str(r[1]), bool(r[2]), str(r[3])) for r in rows if len(r) == 4)
        return SuiteRecord(suite_id, text_of(h.get(b"owner")), text_of(h.get(b"name")),
                           int_of(h.get(b"created")), members)

    async def member_states(self, record: SuiteRecord, *, with_results: bool = False) -> list[MemberState]:
        """Every member's state, in one round trip."""
        fields = REPORT_FIELDS if with_results else PROGRESS_FIELDS
        pipe = self.client.pipeline(transaction=False)
        for m in record.members:
            pipe.hmget(self.keys.job(m.job_id), fields)
        return [_member_state(list(values)) for values in await pipe.execute()]
