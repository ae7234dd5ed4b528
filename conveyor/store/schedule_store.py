"""Schedules in the store: a job template submitted at every occurrence of a cron
expression in a time zone.

Keys (prefix P): the hash P:schedule:<id>; P:schedules:due, every unpaused schedule
scored by its next run (ms); P:schedules:owner:<owner>, the owner's schedule ids
(ordered by id, and ids begin with their creation time).

Every change is one Lua script (lua/schedule_*.lua). Firing claims an occurrence by
compare-and-set of next_run (expected → next) and creates the job with the shared
create_job() in the same script, so an occurrence fires once however many gateways
try it. The next run is always computed from the time of firing, so occurrences
missed while no gateway ran fire once, not once each.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from conveyor.cron import CronError, next_run_ms
from conveyor.errors import FieldViolation, InvalidArgument, NotFound
from conveyor.store.records import NewJob, State, int_of, text_of
from conveyor.store.replies import Context, refused
from conveyor.store.scripts import library

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_SCHEDULES_PER_OWNER = 10_000
SCHEDULE_ID = re.compile(r"^[0-9a-f]{24}$")
SCHEDULE_LABEL = "schedule_id"


def new_schedule_id(now_ms: int) -> str:
    """24 hex digits: the creation time (ms, 12 digits) then 6 random bytes, so ids
    sort by creation."""
    return f"{now_ms:012x}{secrets.token_hex(6)}"


def occurrence_request_id(schedule_id: str, occurrence_ms: int) -> str:
    """The request id of the job of one occurrence (what makes a repeated fire find
    the job instead of making a second one)."""
    return f"schedule:{schedule_id}:{occurrence_ms}"


@dataclass(frozen=True)
class NewSchedule:
    """A validated schedule to create (built by the gateway from a request)."""

    id: str
    owner: str
    name: str
    cron: str
    time_zone: str
    # The serialized SubmitJobRequest: shown back to clients, and each job's spec.
    template: bytes
    # The job as create_job() reads it; id, request id, labels.schedule_id and
    # run_at are set at each occurrence.
    job: NewJob
    delay_ms: int = 0
    #: The client's idempotency key ('' for none).
    request_id: str = ""

    def fingerprint(self) -> str:
        """The same for a repeat of the request (its request id then answers with the
        schedule the first one made), different for another request."""
        digest = hashlib.sha1(usedforsecurity=False)
        for part in (self.name, self.cron, self.time_zone, str(self.delay_ms)):
            digest.update(part.encode() + b"\0")
        digest.update(self.template)
        return digest.hexdigest()


@dataclass(frozen=True)
class ScheduleRecord:
    id: str
    owner: str
    name: str
    cron: str
    time_zone: str
    template: bytes
    paused: bool
    next_run_ms: int
    last_run_ms: int
    last_job_id: str
    created_ms: int
    run_count: int

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> ScheduleRecord:
        return cls(
            id=text_of(h[b"id"]),
            owner=text_of(h.get(b"owner")),
            name=text_of(h.get(b"name")),
            cron=text_of(h.get(b"cron")),
            time_zone=text_of(h.get(b"tz")),
            template=h.get(b"template", b""),
            paused=h.get(b"paused") == b"1",
            next_run_ms=int_of(h.get(b"next_run")),
            last_run_ms=int_of(h.get(b"last_run")),
            last_job_id=text_of(h.get(b"last_job")),
            created_ms=int_of(h.get(b"created")),
            run_count=int_of(h.get(b"runs")),
        )

    @classmethod
    def from_flat(cls, flat: Sequence[bytes]) -> ScheduleRecord:
        return cls.from_hash({flat[i]: flat[i + 1] for i in range(0, len(flat), 2)})


@dataclass(frozen=True)
class Fired:
    """One occurrence fired: the job it created (or, when the template's dedup key
    refused it, the job that refused it)."""

    schedule_id: str
    occurrence_ms: int
    next_run_ms: int
    job_id: str
    state: State | None
    existing: bool
    duplicate_of: str = ""


@dataclass(frozen=True)
class FireRound:
    fired: list[Fired]
    # Due schedules looked at (fired, or claimed by another gateway first).
    attempted: int
    # Schedules whose occurrence could not be fired, and why.
    failed: dict[str, str] = field(default_factory=dict)


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        last_id = ""
    if not SCHEDULE_ID.match(last_id):
        raise InvalidArgument(FieldViolation("page_token", "not a token this server issued"))
    return last_id


class ScheduleStore:
    def __init__(self, client: aioredis.Redis, prefix: str, *, max_per_owner: int = MAX_SCHEDULES_PER_OWNER) -> None:
        # redis-py types every reply as a wide union; replies are parsed here by shape.
        self.client: Any = client
        self.prefix = prefix
        self.max_per_owner = max_per_owner
        self._library = library()
        # Cron and zone never change for a schedule id: remembered once read.
        self._rules: dict[str, tuple[str, str]] = {}

    # ---- keys ---------------------------------------------------------------------

    def key(self, schedule_id: str) -> str:
        return f"{self.prefix}:schedule:{schedule_id}"

    @property
    def due_key(self) -> str:
        return f"{self.prefix}:schedules:due"

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:schedules:owner:{owner}"

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._library.call(self.client, name, [self.prefix, *args])

    async def now_ms(self) -> int:
        """Redis's clock: every gateway fires by the same clock, whatever its own."""
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # ---- create, read, delete ---------------------------------------------------------

    async def create(self, new: NewSchedule) -> tuple[ScheduleRecord, bool]:
        """The schedule made, and whether it existed already (its request id seen
        within 24 h: the schedule that request made, unchanged)."""
        now = await self.now_ms()
        first = next_run_ms(new.cron, new.time_zone, now)
        try:
            schedule_id, existing = await self._run(
                "schedule_create", new.id, new.owner, new.name, new.cron, new.time_zone, new.template,
                new.job.to_json(), new.delay_ms, first, self.max_per_owner, new.request_id, new.fingerprint(),
            )
        except ResponseError as exc:
            raise refused(exc, Context(action="create schedule", request_id=new.request_id)) from None
        return await self.get(schedule_id.decode(), new.owner), bool(existing)

    async def get(self, schedule_id: str, owner: str) -> ScheduleRecord:
        h = await self.client.hgetall(self.key(schedule_id)) if SCHEDULE_ID.match(schedule_id) else {}
        if not h or text_of(h.get(b"owner")) != owner:
            # Someone else's schedule is indistinguishable from a missing one.
            raise NotFound(f"schedule {schedule_id!r} not found", reason="SCHEDULE_NOT_FOUND",
                           metadata={"schedule_id": schedule_id})
        return ScheduleRecord.from_hash(h)

    async def list_schedules(
        self, owner: str, *, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[list[ScheduleRecord], str]:
        """The owner's schedules, oldest first; the token is the last id of the page,
        so pages stay right while schedules are added or deleted."""
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        start = f"({_decode_token(page_token)}" if page_token else "-"
        ids = await self.client.zrangebylex(self.owner_key(owner), start, "+", start=0, num=size + 1)
        more = len(ids) > size
        ids = ids[:size]
        pipe = self.client.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.key(sid.decode()))
        records = [ScheduleRecord.from_hash(h) for h in await pipe.execute() if h]
        token = _encode_token(ids[-1].decode()) if more and ids else ""
        return records, token

    async def _run_owned(self, name: str, schedule_id: str, owner: str, *args: Any) -> Any:
        """A script on one of the owner's schedules (refused as SCHEDULE_NOT_FOUND when
        it is not)."""
        if not SCHEDULE_ID.match(schedule_id):
            raise NotFound(f"schedule {schedule_id!r} not found", reason="SCHEDULE_NOT_FOUND",
                           metadata={"schedule_id": schedule_id})
        try:
            return await self._run(name, schedule_id, owner, *args)
        except ResponseError as exc:
            raise refused(exc) from None

    async def delete(self, schedule_id: str, owner: str) -> None:
        await self._run_owned("schedule_delete", schedule_id, owner)
        self._rules.pop(schedule_id, None)

    async def pause(self, schedule_id: str, owner: str) -> ScheduleRecord:
        return ScheduleRecord.from_flat(await self._run_owned("schedule_pause", schedule_id, owner))

    async def resume(self, schedule_id: str, owner: str) -> ScheduleRecord:
        """Resume a paused schedule from now on: the occurrences passed while it was
        paused are not made up."""
        current = await self.get(schedule_id, owner)
        if not current.paused:
            return current
        nxt = next_run_ms(current.cron, current.time_zone, await self.now_ms())
        return ScheduleRecord.from_flat(await self._run_owned("schedule_resume", schedule_id, owner, nxt))

    # ---- firing -----------------------------------------------------------------------

    async def _rule(self, schedule_id: str) -> tuple[str, str] | None:
        rule = self._rules.get(schedule_id)
        if rule is None:
            cron, tz = await self.client.hmget(self.key(schedule_id), "cron", "tz")
            if cron is None or tz is None:
                return None
            rule = self._rules[schedule_id] = (cron.decode(), tz.decode())
        return rule

    async def fire(self, schedule_id: str, expected_ms: int, now_ms: int) -> Fired | None:
        """Fire the occurrence `expected_ms` of a schedule if it is still due and
        nobody fired it yet; None otherwise."""
        rule = await self._rule(schedule_id)
        # A deleted schedule still gets the call: the script takes it off the due set.
        nxt = next_run_ms(*rule, max(now_ms, expected_ms)) if rule else expected_ms + 1
        reply = await self._run("schedule_fire", schedule_id, expected_ms, nxt, uuid.uuid4().hex)
        if not reply:
            return None
        job_id, state, existing, duplicate_of = reply
        return Fired(
            schedule_id=schedule_id,
            occurrence_ms=expected_ms,
            next_run_ms=nxt,
            job_id=job_id.decode(),
            state=State(state.decode()) if job_id else None,
            existing=bool(existing),
            duplicate_of=duplicate_of.decode(),
        )

    async def fire_due(self, limit: int = 100) -> FireRound:
        """Fire every due occurrence (up to `limit` schedules). A schedule that cannot
        be fired is reported in `failed` and does not hold up the others."""
        now = await self.now_ms()
        rows = await self.client.zrangebyscore(self.due_key, "-inf", now, start=0, num=limit, withscores=True)
        fired = []
        failed: dict[str, str] = {}
        for member, score in rows:
            schedule_id = member.decode()
            try:
                result = await self.fire(schedule_id, int(score), now)
            except (ResponseError, CronError) as exc:
                failed[schedule_id] = str(exc)
                continue
            if result is not None:
                fired.append(result)
        return FireRound(fired, len(rows), failed)

    async def ms_until_due(self) -> int | None:
        """Milliseconds until the earliest next run (0 if one is due), or None when
        no schedule is waiting to run."""
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.due_key, 0, 0, withscores=True)
        (seconds, micros), first = await pipe.execute()
        if not first:
            return None
        now = int(seconds) * 1000 + int(micros) // 1000
        return max(0, int(first[0][1]) - now)
