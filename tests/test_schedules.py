"""Schedules: cron occurrences (time zones, DST), the store's atomic firing, and
ScheduleService end to end with two gateway processes on one Redis.

A cron expression has minute resolution, and no test waits for a minute to pass.
Where a test needs an occurrence to come due, it sets the schedule's next run
directly in Redis (`make_due`) to an instant in the past (or a second ahead), as the
passing of time would leave it: the schedule hash's next_run and its score in the
due set. That is the stand-in for waiting; everything after it (claiming the
occurrence, creating the job, computing the next run) is the real code path of the
running gateways.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.cron import CronError, check_cron, check_time_zone, next_run_ms, occurrences_ms
from conveyor.store.job_store import JobStore
from conveyor.store.schedule_store import (
    SCHEDULE_LABEL,
    ScheduleStore,
    new_schedule_id,
    occurrence_request_id,
)
from conveyor.v1 import job_pb2, job_service_pb2, schedule_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from gateway.mapping import new_schedule
from gateway.schedules import validate_schedule
from gateway.validation import Limits
from tests.support.grpc_helpers import error_info, field_violations, unique_queue, wait_state
from tests.support.processes import Process, Stack, free_port, stack_env

pb = schedule_service_pb2
BERLIN = ZoneInfo("Europe/Berlin")
MINUTE_MS = 60_000
LIMITS = Limits(max_steps=200, max_file_bytes=5 << 20, max_request_bytes=8 << 20, max_job_timeout_ms=3_600_000)


def ms(year: int, month: int, day: int, hour: int, minute: int, zone: ZoneInfo = BERLIN, fold: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).timestamp() * 1000)


def wall(ms_: int, zone: ZoneInfo = BERLIN) -> str:
    """'2025-03-30 03:30 +0200': the wall time and offset of an instant."""
    return datetime.fromtimestamp(ms_ / 1000, tz=zone).strftime("%Y-%m-%d %H:%M %z")


def create_request(body: dict[str, Any]) -> pb.CreateScheduleRequest:
    """A CreateScheduleRequest from its protobuf JSON mapping, as grpcurl would send it."""
    return json_format.ParseDict(body, pb.CreateScheduleRequest())


# ---- next-run computation ---------------------------------------------------------------


def test_every_minute_is_the_next_minute_boundary() -> None:
    after = ms(2025, 6, 1, 12, 0) + 12_345
    assert next_run_ms("* * * * *", "Europe/Berlin", after) == ms(2025, 6, 1, 12, 1)
    # Strictly after: an instant on a boundary gives the following one.
    assert next_run_ms("* * * * *", "Europe/Berlin", ms(2025, 6, 1, 12, 1)) == ms(2025, 6, 1, 12, 2)


def test_the_expression_is_read_in_the_schedule_time_zone() -> None:
    after = ms(2025, 1, 15, 0, 0, zone=ZoneInfo("UTC"))
    # 09:00 in Kolkata (UTC+05:30) is 03:30 UTC; in Berlin in winter, 08:00 UTC.
    assert wall(next_run_ms("0 9 * * *", "Asia/Kolkata", after), ZoneInfo("UTC")) == "2025-01-15 03:30 +0000"
    assert wall(next_run_ms("0 9 * * *", "Europe/Berlin", after), ZoneInfo("UTC")) == "2025-01-15 08:00 +0000"
    assert wall(next_run_ms("0 9 * * *", "UTC", after), ZoneInfo("UTC")) == "2025-01-15 09:00 +0000"


def test_berlin_spring_forward_a_skipped_time_fires_shifted_by_the_gap() -> None:
    # 2025-03-30: clocks go from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    runs = occurrences_ms("30 2 * * *", "Europe/Berlin", ms(2025, 3, 28, 12, 0), 4)
    assert [wall(r) for r in runs] == [
        "2025-03-29 02:30 +0100",
        "2025-03-30 03:30 +0200",
        "2025-03-31 02:30 +0200",
        "2025-04-01 02:30 +0200",
    ]
    # A daily 09:00 stays 09:00 wall time: 08:00 UTC before, 07:00 UTC after.
    nine = occurrences_ms("0 9 * * *", "Europe/Berlin", ms(2025, 3, 29, 12, 0), 2)
    assert [wall(r, ZoneInfo("UTC")) for r in nine] == ["2025-03-30 07:00 +0000", "2025-03-31 07:00 +0000"]


def test_berlin_spring_forward_frequent_runs_skip_the_gap_without_doubles() -> None:
    runs = occurrences_ms("*/15 * * * *", "Europe/Berlin", ms(2025, 3, 30, 1, 20), 5)
    assert [wall(r) for r in runs] == [
        "2025-03-30 01:30 +0100",
        "2025-03-30 01:45 +0100",
        "2025-03-30 03:00 +0200",  # 15 real minutes after 01:45 CET
        "2025-03-30 03:15 +0200",
        "2025-03-30 03:30 +0200",
    ]
    assert [b - a for a, b in itertools.pairwise(runs)] == [15 * MINUTE_MS] * 4
    hourly = occurrences_ms("0 * * * *", "Europe/Berlin", ms(2025, 3, 30, 0, 30), 3)
    assert [wall(r) for r in hourly] == ["2025-03-30 01:00 +0100", "2025-03-30 03:00 +0200", "2025-03-30 04:00 +0200"]


def test_berlin_fall_back_a_fixed_time_fires_once() -> None:
    # 2025-10-26: clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    runs = occurrences_ms("30 2 * * *", "Europe/Berlin", ms(2025, 10, 25, 12, 0), 3)
    assert [wall(r) for r in runs] == ["2025-10-26 02:30 +0200", "2025-10-27 02:30 +0100", "2025-10-28 02:30 +0100"]


def test_berlin_fall_back_frequent_runs_keep_their_real_cadence() -> None:
    runs = occurrences_ms("*/15 * * * *", "Europe/Berlin", ms(2025, 10, 26, 1, 50), 10)
    assert [wall(r) for r in runs] == [
        "2025-10-26 02:00 +0200",
        "2025-10-26 02:15 +0200",
        "2025-10-26 02:30 +0200",
        "2025-10-26 02:45 +0200",
        "2025-10-26 02:00 +0100",
        "2025-10-26 02:15 +0100",
        "2025-10-26 02:30 +0100",
        "2025-10-26 02:45 +0100",
        "2025-10-26 03:00 +0100",
        "2025-10-26 03:15 +0100",
    ]
    assert {b - a for a, b in itertools.pairwise(runs)} == {15 * MINUTE_MS}
    # Starting inside the repeated hour (its second pass) continues from there.
    assert wall(next_run_ms("*/15 * * * *", "Europe/Berlin", ms(2025, 10, 26, 2, 20, fold=1))) == (
        "2025-10-26 02:30 +0100"
    )


def test_rare_expressions_and_day_or_weekday() -> None:
    leap = occurrences_ms("0 0 29 2 *", "UTC", ms(2025, 1, 1, 0, 0, zone=ZoneInfo("UTC")), 2)
    assert [wall(r, ZoneInfo("UTC")) for r in leap] == ["2028-02-29 00:00 +0000", "2032-02-29 00:00 +0000"]
    # Standard cron: day-of-month and day-of-week both restricted means either.
    first = next_run_ms("0 12 13 * 5", "UTC", ms(2025, 6, 1, 0, 0, zone=ZoneInfo("UTC")))
    assert wall(first, ZoneInfo("UTC")) == "2025-06-06 12:00 +0000"  # a Friday, before the 13th


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("*/5 * * *", "5 fields"),
        ("0 */5 * * * *", "5 fields"),  # seconds are not part of the contract
        ("@hourly", "5 fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("* * * * mon-xyz", "not a valid cron expression"),
        ("0 0 30 2 *", "never matches"),
    ],
)
def test_bad_cron_expressions_are_refused(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        check_cron(expr)


def test_cron_is_normalized_and_zones_are_iana_names() -> None:
    assert check_cron("  */5  *  * * 1-5 ") == "*/5 * * * 1-5"
    assert check_time_zone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ("Mars/Olympus", "europe/berlin", "localtime", "../etc/passwd", "CET+1"):
        with pytest.raises(CronError, match="IANA"):
            check_time_zone(bad)


def test_validation_names_each_bad_field() -> None:
    req = create_request({
        "cron": "* * *",
        "timeZone": "Nowhere/City",
        "name": "x" * 200,
        "template": {"requestId": "r1", "runAt": "2030-01-01T00:00:00Z", "browser": {"steps": []}},
    })
    fields = {v.field for v in validate_schedule(req, LIMITS)}
    assert fields == {
        "cron", "time_zone", "name", "template.request_id", "template.run_at", "template.browser.steps",
    }
    assert {v.field for v in validate_schedule(pb.CreateScheduleRequest(cron="* * * * *"), LIMITS)} == {"template"}
    ok = create_request({"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "template": {"noop": {}}})
    assert validate_schedule(ok, LIMITS) == []
    assert validate_schedule(create_request({"cron": "* * * * *", "template": {"noop": {}}}), LIMITS) == []


# ---- the store: claiming occurrences ------------------------------------------------------


@pytest.fixture
def schedules(store: JobStore) -> ScheduleStore:
    return ScheduleStore(store.client, store.prefix)


async def make_due(client: Any, prefix: str, schedule_id: str, at_ms: int) -> None:
    """The stand-in for waiting until an occurrence: the schedule's next run moved to
    `at_ms` (in the past), in its hash and in the due set, as time would leave it."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(f"{prefix}:schedule:{schedule_id}", "next_run", at_ms)
    pipe.zadd(f"{prefix}:schedules:due", {schedule_id: at_ms})
    await pipe.execute()


async def add_schedule(schedules: ScheduleStore, body: dict[str, Any], owner: str = "default") -> str:
    req = create_request(body)
    assert validate_schedule(req, LIMITS) == []
    sid = new_schedule_id(await schedules.now_ms())
    new = new_schedule(req, owner=owner, schedule_id=sid, default_max_attempts=3, default_timeout_ms=60_000)
    created, existing = await schedules.create(new)
    assert created.id == sid and not existing
    return sid


async def test_concurrent_fires_of_one_occurrence_create_one_job(
    schedules: ScheduleStore, store: JobStore, redis_url: str
) -> None:
    q = unique_queue("sched")
    sid = await add_schedule(schedules, {"cron": "* * * * *", "timeZone": "Europe/Berlin",
                                         "template": {"queue": q, "noop": {}, "labels": {"team": "web"}}})
    now = await schedules.now_ms()
    occurrence = now - now % MINUTE_MS
    await make_due(store.client, store.prefix, sid, occurrence)
    # Forty firers on their own connections, as forty gateways would be.
    firers = [ScheduleStore(aioredis.Redis.from_url(redis_url), store.prefix) for _ in range(40)]
    try:
        results = await asyncio.gather(*(firer.fire(sid, occurrence, now) for firer in firers))
    finally:
        for firer in firers:
            await firer.client.aclose()
    fired = [r for r in results if r is not None]
    assert len(fired) == 1
    (f,) = fired
    assert f.occurrence_ms == occurrence and not f.existing
    job = await store.get(f.job_id)
    assert job.queue == q and job.owner == "default"
    assert job.labels == {"team": "web", SCHEDULE_LABEL: sid}
    assert job.request_id == occurrence_request_id(sid, occurrence)
    assert await store.client.zcard(f"{store.prefix}:q:{q}:jobs") == 1

    rec = await schedules.get(sid, "default")
    assert rec.run_count == 1 and rec.last_job_id == f.job_id
    assert rec.next_run_ms == f.next_run_ms > now and rec.next_run_ms % MINUTE_MS == 0
    assert rec.next_run_ms - now <= MINUTE_MS
    assert await store.client.zscore(schedules.due_key, sid) == rec.next_run_ms
    # The same occurrence again (a retried call): nothing.
    assert await schedules.fire(sid, occurrence, now) is None
    assert await store.client.zcard(f"{store.prefix}:q:{q}:jobs") == 1


async def test_an_occurrence_not_yet_due_by_the_store_clock_does_not_fire(
    schedules: ScheduleStore, store: JobStore
) -> None:
    sid = await add_schedule(schedules, {"cron": "* * * * *", "template": {"queue": unique_queue(), "noop": {}}})
    rec = await schedules.get(sid, "default")
    # A gateway whose clock runs ahead believes the next run has come: the store's
    # clock decides.
    assert await schedules.fire(sid, rec.next_run_ms, rec.next_run_ms + 5_000) is None
    assert (await schedules.get(sid, "default")).run_count == 0


async def test_a_paused_schedule_does_not_fire_and_resume_starts_from_now(
    schedules: ScheduleStore, store: JobStore
) -> None:
    q = unique_queue()
    sid = await add_schedule(schedules, {"cron": "* * * * *", "template": {"queue": q, "noop": {}}})
    paused = await schedules.pause(sid, "default")
    assert paused.paused and paused.next_run_ms == 0
    assert await store.client.zscore(schedules.due_key, sid) is None
    # Paused between a gateway reading the due set and firing: the fire refuses.
    now = await schedules.now_ms()
    await make_due(store.client, store.prefix, sid, now - 10 * MINUTE_MS)
    round_ = await schedules.fire_due()
    assert round_.attempted == 1 and round_.fired == []
    assert await store.client.zscore(schedules.due_key, sid) is None
    assert await store.client.exists(f"{store.prefix}:q:{q}:jobs") == 0

    resumed = await schedules.resume(sid, "default")
    assert not resumed.paused
    assert resumed.next_run_ms > now and resumed.next_run_ms % MINUTE_MS == 0
    assert resumed.next_run_ms - now <= 2 * MINUTE_MS
    assert await store.client.zscore(schedules.due_key, sid) == resumed.next_run_ms
    # Resuming a running schedule changes nothing.
    assert await schedules.resume(sid, "default") == resumed


async def test_a_template_dedup_key_skips_an_occurrence_while_the_last_job_runs(
    schedules: ScheduleStore, store: JobStore
) -> None:
    q = unique_queue()
    sid = await add_schedule(schedules, {"cron": "* * * * *", "template": {"queue": q, "noop": {}, "dedupKey": "one"}})
    now = await schedules.now_ms()
    first_at = now - now % MINUTE_MS - 2 * MINUTE_MS
    await make_due(store.client, store.prefix, sid, first_at)
    (first,) = (await schedules.fire_due()).fired
    assert first.job_id and first.state is not None
    # The next occurrence while the first job still waits: refused, and the schedule
    # moves on all the same.
    await make_due(store.client, store.prefix, sid, first_at + MINUTE_MS)
    (second,) = (await schedules.fire_due()).fired
    assert second.job_id == "" and second.duplicate_of == first.job_id
    rec = await schedules.get(sid, "default")
    assert rec.run_count == 2 and rec.last_job_id == "" and rec.next_run_ms > now
    assert await store.client.zcard(f"{store.prefix}:q:{q}:jobs") == 1


async def test_a_template_delay_counts_from_each_submission(schedules: ScheduleStore, store: JobStore) -> None:
    sid = await add_schedule(schedules, {"cron": "0 3 * * *", "template": {"queue": unique_queue(), "delay": "90s",
                                                                            "noop": {}}})
    now = await schedules.now_ms()
    await make_due(store.client, store.prefix, sid, now - 1000)
    (fired,) = (await schedules.fire_due()).fired
    job = await store.get(fired.job_id)
    assert job.state.value == "DELAYED"
    assert now + 90_000 <= job.run_at_ms <= await schedules.now_ms() + 90_000


async def test_a_schedule_that_cannot_fire_does_not_hold_up_the_others(
    schedules: ScheduleStore, store: JobStore
) -> None:
    q = unique_queue()
    broken = await add_schedule(schedules, {"cron": "* * * * *", "template": {"queue": q, "noop": {}}})
    healthy = await add_schedule(schedules, {"cron": "* * * * *", "template": {"queue": q, "noop": {}}})
    await store.client.hset(schedules.key(broken), "job", "{not json")
    now = await schedules.now_ms()
    await make_due(store.client, store.prefix, broken, now - 2000)
    await make_due(store.client, store.prefix, healthy, now - 1000)
    round_ = await schedules.fire_due()
    assert [f.schedule_id for f in round_.fired] == [healthy]
    assert list(round_.failed) == [broken]
    # The broken one stays due (the loop tries it again at its next tick).
    assert (await schedules.get(broken, "default")).next_run_ms == now - 2000


async def test_schedules_belong_to_their_owner(schedules: ScheduleStore) -> None:
    sid = await add_schedule(schedules, {"cron": "* * * * *", "template": {"noop": {}}}, owner="tenant-a")
    assert (await schedules.get(sid, "tenant-a")).owner == "tenant-a"
    for call in (schedules.get, schedules.pause, schedules.resume, schedules.delete):
        with pytest.raises(Exception, match="not found"):
            await call(sid, "tenant-b")
    assert (await schedules.list_schedules("tenant-b"))[0] == []
    assert [r.id for r in (await schedules.list_schedules("tenant-a"))[0]] == [sid]


async def test_a_tenant_has_a_bounded_number_of_schedules(store: JobStore) -> None:
    small = ScheduleStore(store.client, store.prefix, max_per_owner=2)
    for _ in range(2):
        await add_schedule(small, {"cron": "* * * * *", "template": {"noop": {}}})
    with pytest.raises(Exception, match="at most 2 schedules"):
        await add_schedule(small, {"cron": "* * * * *", "template": {"noop": {}}})


# ---- end to end: two gateways on one Redis ---------------------------------------------


@dataclass
class TwoGateways:
    stack: Stack
    first: Process
    second: Process
    targets: tuple[str, str]
    redis: Any

    def key(self, *parts: str) -> str:
        return ":".join((self.stack.prefix, *parts))

    def gateways(self) -> list[Process]:
        return [self.first, self.second]


@pytest.fixture(scope="module")
async def two(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TwoGateways]:
    """Two gateway processes (two firing loops) and one executor under one prefix,
    shared by this module's end-to-end tests (each uses queues of its own)."""
    data = tmp_path_factory.mktemp("two-gateways")
    stack = Stack(redis_url, stack_env(redis_url, data), data / "logs")
    client = aioredis.Redis.from_url(stack.redis_url)
    first: Process | None = None
    try:
        first = stack.start_gateway()
        second_target = f"127.0.0.1:{free_port()}"
        second = stack.start_gateway(CONVEYOR_GRPC_ADDR=second_target)
        stack.start_executor()
        yield TwoGateways(stack, first, second, (stack.grpc_target, second_target), client)
    finally:
        await client.aclose()
        stack.stop()  # the executor and the second gateway (the stack's last)
        if first is not None:
            first.stop()
            for line in first.log().splitlines():
                if '"level": "error"' in line or "Traceback" in line:
                    print(f"[first gateway {first.pid}] {line[:3000]}")
        stack.print_problems()


@pytest.fixture
async def stubs(two: TwoGateways) -> AsyncIterator[list[tuple[ScheduleServiceStub, JobServiceStub]]]:
    channels = [grpc.aio.insecure_channel(t) for t in two.targets]
    try:
        yield [(ScheduleServiceStub(ch), JobServiceStub(ch)) for ch in channels]
    finally:
        for ch in channels:
            await ch.close()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Wait for a condition of the running system, checked every 50 ms, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def redis_now_ms(client: Any) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def jobs_by_occurrence(two: TwoGateways, queue: str) -> dict[str, list[str]]:
    """The queue's jobs grouped by request id (one per occurrence: schedule:<id>:<ms>)."""
    out: dict[str, list[str]] = {}
    for job_id in await two.redis.zrange(two.key("q", queue, "jobs"), 0, -1):
        request_id = await two.redis.hget(two.key("job", job_id.decode()), "request_id")
        out.setdefault(request_id.decode(), []).append(job_id.decode())
    return out


def fired_log_lines(two: TwoGateways) -> list[dict[str, Any]]:
    lines = []
    for p in two.gateways():
        for line in p.log().splitlines():
            if '"schedule fired"' in line:
                lines.append({**json.loads(line), "gateway_pid": p.pid})
    return lines


async def test_each_occurrence_fires_once_across_two_gateways(
    two: TwoGateways, stubs: list[tuple[ScheduleServiceStub, JobServiceStub]]
) -> None:
    q = unique_queue("sched")
    ids = []
    for i in range(40):
        sched, _ = stubs[i % 2]
        created = await sched.CreateSchedule(create_request(
            {"cron": "* * * * *", "timeZone": "Europe/Berlin", "template": {"queue": q, "noop": {}}}))
        ids.append(created.schedule.id)
    now = await redis_now_ms(two.redis)
    # The occurrence comes due a moment from now, after a full tick of both loops:
    # each loop sees it as the earliest next run and sleeps until exactly then, so
    # both gateways wake together and race for all forty.
    occurrence = now + 1_000
    pipe = two.redis.pipeline(transaction=True)
    for sid in ids:
        pipe.hset(two.key("schedule", sid), "next_run", occurrence)
        pipe.zadd(two.key("schedules", "due"), {sid: occurrence})
    await pipe.execute()

    async def all_fired() -> bool:
        for sid in ids:
            s = (await stubs[0][0].GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
            if s.next_run_time.ToMilliseconds() <= occurrence:
                return False
        return True

    await until(all_fired, 10, "every schedule to fire its occurrence")
    fired_at = await redis_now_ms(two.redis)
    by_request = await jobs_by_occurrence(two, q)
    for sid in ids:
        assert len(by_request[occurrence_request_id(sid, occurrence)]) == 1
        s = (await stubs[1][0].GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
        nxt = s.next_run_time.ToMilliseconds()
        # The next minute boundary in Europe/Berlin after the fire.
        assert nxt % MINUTE_MS == 0 and now < nxt <= fired_at + MINUTE_MS
        assert datetime.fromtimestamp(nxt / 1000, tz=BERLIN).second == 0
        assert s.last_job_id in by_request[occurrence_request_id(sid, occurrence)] or s.run_count > 1
    # Only later occurrences (a minute boundary passing during the test) may add jobs.
    others = [r for r in by_request if not r.endswith(f":{occurrence}")]
    assert all(int(r.rsplit(":", 1)[1]) > occurrence for r in others)
    lines = fired_log_lines(two)
    planted = [line for line in lines if line["schedule_id"] in ids and line["occurrence_ms"] == occurrence]
    assert sorted(line["schedule_id"] for line in planted) == sorted(ids)


async def test_missed_occurrences_fire_once_not_once_each(
    two: TwoGateways, stubs: list[tuple[ScheduleServiceStub, JobServiceStub]]
) -> None:
    q = unique_queue("missed")
    sched, _ = stubs[0]
    sid = (await sched.CreateSchedule(create_request(
        {"cron": "* * * * *", "timeZone": "Europe/Berlin", "template": {"queue": q, "noop": {}}}))).schedule.id
    now = await redis_now_ms(two.redis)
    # Everything was down for ten minutes: ten occurrences passed unfired.
    missed_since = now - now % MINUTE_MS - 10 * MINUTE_MS
    await make_due(two.redis, two.stack.prefix, sid, missed_since)

    async def fired() -> bool:
        s: pb.Schedule = (await sched.GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
        return s.next_run_time.ToMilliseconds() > missed_since

    await until(fired, 10, "the missed occurrence to fire")
    s = (await sched.GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
    by_request = await jobs_by_occurrence(two, q)
    past = {r: v for r, v in by_request.items() if int(r.rsplit(":", 1)[1]) < now}
    assert past == {occurrence_request_id(sid, missed_since): past[occurrence_request_id(sid, missed_since)]}
    assert len(past[occurrence_request_id(sid, missed_since)]) == 1
    # The next run counts from the time of firing, not from the missed one.
    assert s.next_run_time.ToMilliseconds() > now and s.next_run_time.ToMilliseconds() % MINUTE_MS == 0


async def test_paused_schedules_do_not_fire_and_resume_from_now(
    two: TwoGateways, stubs: list[tuple[ScheduleServiceStub, JobServiceStub]]
) -> None:
    q = unique_queue("paused")
    (a, _), (b, _) = stubs
    body = {"cron": "* * * * *", "template": {"queue": q, "noop": {}}}
    paused_id = (await a.CreateSchedule(create_request(body))).schedule.id
    control_id = (await a.CreateSchedule(create_request(body))).schedule.id
    paused = (await b.PauseSchedule(pb.PauseScheduleRequest(id=paused_id))).schedule
    assert paused.paused and not paused.HasField("next_run_time")
    now = await redis_now_ms(two.redis)
    # Both come due; the paused one as if a gateway had read the due set just before
    # the pause (the fire script must still refuse it).
    await make_due(two.redis, two.stack.prefix, paused_id, now - MINUTE_MS)
    await make_due(two.redis, two.stack.prefix, control_id, now - MINUTE_MS)

    async def settled() -> bool:
        control = (await a.GetSchedule(pb.GetScheduleRequest(id=control_id))).schedule
        still_due = await two.redis.zscore(two.key("schedules", "due"), paused_id)
        return control.run_count >= 1 and still_due is None

    await until(settled, 10, "the control schedule to fire and the paused one to leave the due set")
    got = (await a.GetSchedule(pb.GetScheduleRequest(id=paused_id))).schedule
    assert got.paused and got.run_count == 0 and got.last_job_id == ""
    assert all(paused_id not in r for r in await jobs_by_occurrence(two, q))

    resumed = (await a.ResumeSchedule(pb.ResumeScheduleRequest(id=paused_id))).schedule
    after = await redis_now_ms(two.redis)
    assert not resumed.paused and resumed.run_count == 0
    nxt = resumed.next_run_time.ToMilliseconds()
    assert nxt > now and nxt % MINUTE_MS == 0 and nxt <= after + MINUTE_MS


async def test_a_fired_job_runs_to_completed(
    two: TwoGateways, stubs: list[tuple[ScheduleServiceStub, JobServiceStub]]
) -> None:
    q = unique_queue("run")
    sched, jobs = stubs[1]
    sid = (await sched.CreateSchedule(create_request(
        {"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "name": "heartbeat",
         "template": {"queue": q, "priority": "PRIORITY_HIGH", "labels": {"kind": "probe"},
                      "noop": {"sleep": "0.1s"}}}))).schedule.id
    now = await redis_now_ms(two.redis)
    await make_due(two.redis, two.stack.prefix, sid, now - now % MINUTE_MS)

    async def has_job() -> bool:
        s: pb.Schedule = (await sched.GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
        return s.last_job_id != ""

    await until(has_job, 10, "the schedule's job")
    s = (await sched.GetSchedule(pb.GetScheduleRequest(id=sid))).schedule
    job = await wait_state(jobs, s.last_job_id, {job_pb2.JOB_STATE_COMPLETED}, timeout=30)
    assert job.queue == q and job.priority == job_pb2.PRIORITY_HIGH
    assert dict(job.labels) == {"kind": "probe", SCHEDULE_LABEL: sid}
    assert job.noop.sleep.ToMilliseconds() == 100
    assert s.last_run_time.ToMilliseconds() >= now and s.run_count == 1
    # Every five minutes in Berlin.
    assert datetime.fromtimestamp(s.next_run_time.ToMilliseconds() / 1000, tz=BERLIN).minute % 5 == 0


async def test_delete_removes_the_schedule(
    two: TwoGateways, stubs: list[tuple[ScheduleServiceStub, JobServiceStub]]
) -> None:
    (a, _), (b, _) = stubs
    sid = (await a.CreateSchedule(create_request({"cron": "* * * * *", "template": {"noop": {}}}))).schedule.id
    await b.DeleteSchedule(pb.DeleteScheduleRequest(id=sid))
    for stub in (a, b):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSchedule(pb.GetScheduleRequest(id=sid))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await a.DeleteSchedule(pb.DeleteScheduleRequest(id=sid))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert sid not in [s.id for s in (await a.ListSchedules(pb.ListSchedulesRequest())).schedules]
    assert await two.redis.exists(two.key("schedule", sid)) == 0
    assert await two.redis.zscore(two.key("schedules", "due"), sid) is None


# ---- the API on the session stack --------------------------------------------------------


@pytest.fixture
async def sched_stub(stack: Stack) -> AsyncIterator[ScheduleServiceStub]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        yield ScheduleServiceStub(ch)


async def test_create_answers_with_id_and_next_run_time(sched_stub: ScheduleServiceStub, stack: Stack) -> None:
    # The request exactly as DESIGN.md gives it, in the JSON mapping.
    template = {"queue": unique_queue(), "noop": {"sleep": "0.1s"}}
    body = {"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "template": template}
    before = int(time.time() * 1000)
    s = (await sched_stub.CreateSchedule(create_request(body))).schedule
    as_json = json_format.MessageToDict(s)
    assert re.fullmatch(r"[0-9a-f]{24}", as_json["id"])
    assert {"id", "nextRunTime", "createTime", "cron", "timeZone", "template", "owner"} <= set(as_json)
    nxt = s.next_run_time.ToMilliseconds()
    assert nxt % (5 * MINUTE_MS) == 0 and before - 5000 < nxt <= before + 5 * MINUTE_MS + 5000
    assert s.cron == "*/5 * * * *" and s.time_zone == "Europe/Berlin" and not s.paused
    assert s.template == json_format.ParseDict(template, job_service_pb2.SubmitJobRequest())
    got = (await sched_stub.GetSchedule(pb.GetScheduleRequest(id=s.id))).schedule
    assert got == s
    # No time zone: UTC.
    utc = (await sched_stub.CreateSchedule(create_request({"cron": "0 4 * * *", "template": {"noop": {}}}))).schedule
    assert utc.time_zone == "UTC"
    assert datetime.fromtimestamp(utc.next_run_time.ToMilliseconds() / 1000, tz=UTC).hour == 4
    for sid in (s.id, utc.id):
        await sched_stub.DeleteSchedule(pb.DeleteScheduleRequest(id=sid))


async def test_a_create_sent_again_with_its_request_id_makes_no_second_schedule(
    sched_stub: ScheduleServiceStub,
) -> None:
    """A client retrying CreateSchedule after a lost reply (same request id) gets the
    schedule it made, marked existing, and not a second one that would fire every
    occurrence twice; another request id makes another schedule."""
    body = {"cron": "*/5 * * * *", "requestId": f"create-{uuid.uuid4().hex}", "template": {"noop": {}}}
    first = await sched_stub.CreateSchedule(create_request(body))
    again = await sched_stub.CreateSchedule(create_request(body))
    assert not first.existing and again.existing
    assert again.schedule == first.schedule
    other = await sched_stub.CreateSchedule(create_request({**body, "requestId": f"other-{uuid.uuid4().hex}"}))
    assert not other.existing and other.schedule.id != first.schedule.id
    listed = {s.id for s in (await sched_stub.ListSchedules(pb.ListSchedulesRequest(page_size=1000))).schedules}
    assert {first.schedule.id, other.schedule.id} <= listed
    for sid in (first.schedule.id, other.schedule.id):
        await sched_stub.DeleteSchedule(pb.DeleteScheduleRequest(id=sid))
    # Deleted, the request id still names it for its 24 h: sent again, the create makes
    # no new schedule and says what became of the first.
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await sched_stub.CreateSchedule(create_request(body))
    assert gone.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(gone.value)
    assert info.reason == "SCHEDULE_DELETED" and info.metadata["schedule_id"] == first.schedule.id
    listed = {s.id for s in (await sched_stub.ListSchedules(pb.ListSchedulesRequest(page_size=1000))).schedules}
    assert first.schedule.id not in listed and other.schedule.id not in listed


async def test_a_request_id_sent_with_another_create_request_is_refused(sched_stub: ScheduleServiceStub) -> None:
    """A request id names one request: another body under it is ALREADY_EXISTS
    (REQUEST_ID_REUSED, with the schedule it made), never silently the first schedule."""
    body = {"cron": "*/5 * * * *", "requestId": f"reuse-{uuid.uuid4().hex}", "template": {"noop": {}}}
    first = await sched_stub.CreateSchedule(create_request(body))
    for changed in ({**body, "cron": "*/7 * * * *"}, {**body, "template": {"noop": {"sleep": "1s"}}}):
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await sched_stub.CreateSchedule(create_request(changed))
        assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        info = error_info(reused.value)
        assert info.reason == "REQUEST_ID_REUSED"
        assert info.metadata["existing_schedule_id"] == first.schedule.id
    assert (await sched_stub.CreateSchedule(create_request(body))).schedule == first.schedule
    await sched_stub.DeleteSchedule(pb.DeleteScheduleRequest(id=first.schedule.id))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "*/5 * * *", "template": {"noop": {}}}, "cron"),
        ({"cron": "0 */5 * * * *", "template": {"noop": {}}}, "cron"),
        ({"cron": "61 * * * *", "template": {"noop": {}}}, "cron"),
        ({"cron": "", "template": {"noop": {}}}, "cron"),
        ({"cron": "* * * * *", "timeZone": "Mars/Olympus", "template": {"noop": {}}}, "time_zone"),
        ({"cron": "* * * * *"}, "template"),
        ({"cron": "* * * * *", "template": {}}, "template.task"),
        ({"cron": "* * * * *", "template": {"browser": {"steps": []}}}, "template.browser.steps"),
        ({"cron": "* * * * *", "template": {"browser": {"steps": [{"navigate": {"url": "file:///etc/passwd"}}]}}},
         "template.browser.steps[0].navigate.url"),
        ({"cron": "* * * * *", "template": {"queue": "bad queue", "noop": {}}}, "template.queue"),
        ({"cron": "* * * * *", "template": {"requestId": "r", "noop": {}}}, "template.request_id"),
        ({"cron": "* * * * *", "template": {"runAt": "2030-01-01T00:00:00Z", "noop": {}}}, "template.run_at"),
        ({"cron": "* * * * *", "requestId": "r" * 129, "template": {"noop": {}}}, "request_id"),
    ],
)
async def test_invalid_requests_name_the_field(
    sched_stub: ScheduleServiceStub, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sched_stub.CreateSchedule(create_request(body))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value), field_violations(caught.value)


@pytest.mark.parametrize("sid", ["0123456789abcdef01234567", "no-such-schedule", ""])
async def test_unknown_ids_are_not_found(sched_stub: ScheduleServiceStub, sid: str) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: sched_stub.GetSchedule(pb.GetScheduleRequest(id=sid)),
        lambda: sched_stub.DeleteSchedule(pb.DeleteScheduleRequest(id=sid)),
        lambda: sched_stub.PauseSchedule(pb.PauseScheduleRequest(id=sid)),
        lambda: sched_stub.ResumeSchedule(pb.ResumeScheduleRequest(id=sid)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_through_every_schedule_oldest_first(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_gateway()
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        stub = ScheduleServiceStub(ch)
        ids = [
            (await stub.CreateSchedule(create_request({"cron": "0 0 1 1 *", "template": {"noop": {}}}))).schedule.id
            for _ in range(7)
        ]
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await stub.ListSchedules(pb.ListSchedulesRequest(page_size=3, page_token=token))
            seen += [s.id for s in page.schedules]
            pages += 1
            token = page.next_page_token
            if not token:
                break
            if pages == 1:
                # Deleting the last schedule of a page does not disturb the next page.
                await stub.DeleteSchedule(pb.DeleteScheduleRequest(id=seen[-1]))
        assert seen == ids and pages == 3
        for bad in ("nonsense", "bm9uc2Vuc2U="):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListSchedules(pb.ListSchedulesRequest(page_token=bad))
            assert "page_token" in field_violations(caught.value)


# ---- the CLI -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    return subprocess.run([conveyor, *args], check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture
def schedule_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        "cron: '30 2 * * *'\n"
        "timeZone: Europe/Berlin\n"
        "name: nightly\n"
        f"template:\n  queue: {unique_queue('cli')}\n  noop: {{sleep: 0.1s}}\n"
    )
    yield path


def test_cli_create_list_pause_resume_delete(stack: Stack, schedule_file: Path) -> None:
    target = ["--target", stack.grpc_target]
    created = run_cli("schedule", "create", str(schedule_file), *target)
    assert created.returncode == 0, created.stderr
    match = re.match(r"created schedule ([0-9a-f]{24}): next run (\S+ \S+ \S+)", created.stdout)
    assert match, created.stdout
    sid = match.group(1)
    assert match.group(2).endswith("02:30 +0100") or match.group(2).endswith("03:30 +0200") or (
        match.group(2).endswith("02:30 +0200")
    )

    listed = run_cli("schedules", *target)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID ")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(sid))
    assert "30 2 * * *" in row and "Europe/Berlin" in row and "nightly" in row

    as_json = run_cli("schedules", "--json", *target)
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert any(e["id"] == sid and e["timeZone"] == "Europe/Berlin" for e in entries)

    paused = run_cli("schedule", "pause", sid, *target)
    assert paused.returncode == 0 and paused.stdout.strip() == f"schedule {sid}: paused", paused.stdout
    resumed = run_cli("schedule", "resume", sid, *target)
    assert resumed.returncode == 0 and resumed.stdout.startswith(f"schedule {sid}: next run "), resumed.stdout
    deleted = run_cli("schedule", "delete", sid, *target)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted schedule {sid}"

    gone = run_cli("schedule", "delete", sid, *target)
    assert gone.returncode == 1 and gone.stderr.startswith("error: NOT_FOUND: ")


def test_cli_bad_schedule_files_are_one_clear_error(stack: Stack, tmp_path: Path) -> None:
    target = ["--target", stack.grpc_target]
    bad_field = tmp_path / "bad.json"
    bad_field.write_text('{"cron": "* * * * *", "tiemZone": "UTC", "template": {"noop": {}}}')
    result = run_cli("schedule", "create", str(bad_field), *target)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "tiemZone" in result.stderr
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"cron": "* * *", "template": {"noop": {}}}')
    refused = run_cli("schedule", "create", str(invalid), *target)
    assert refused.returncode == 1 and refused.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "cron" in refused.stderr


def test_reflection_and_health_know_the_schedule_service(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="conveyor.v1.ScheduleService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="conveyor.v1.ScheduleService")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request])))
        assert answer.file_descriptor_response.file_descriptor_proto, answer

