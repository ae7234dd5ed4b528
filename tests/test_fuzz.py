"""A bounded, seeded fuzz of every RPC of JobService, QueueService and
ScheduleService (taken from the service descriptors, so a new RPC is covered
without a change here), over raw bytes on a gateway and executor of its own:

- random bytes;
- valid requests mutated at the byte level;
- well-formed messages with random and oversized field values (huge strings and
  repeated fields, extreme ints, durations and timestamps out of range).

Never INTERNAL or UNKNOWN; every refusal is INVALID_ARGUMENT or another documented
code; every error's details trailer is small; the gateway is healthy afterwards and
every job it accepted is readable through GetJob and listed by ListJobs."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import (
    job_pb2,
    job_service_pb2,
    queue_service_pb2,
    schedule_service_pb2,
)
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue
from tests.support.processes import Stack, stack_env

pb, qpb, spb = job_service_pb2, queue_service_pb2, schedule_service_pb2

SEED = 20_261_201
RANDOM_BYTES = 60
MUTATED = 80
SHAPED = 120
DEADLINE_S = 1.5
STREAM_MESSAGES = 3
CONCURRENCY = 32
MAX_TRAILER = 8 * 1024
MAX_SHAPED = 1024 * 1024
PREFIX = "fuzz"

SERVICES = [
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
]
METHODS = [(f"/{svc.full_name}/{m.name}", m) for svc in SERVICES for m in svc.methods]
OWN_CODES = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
INT_RANGES = {
    F.TYPE_INT32: INT32, F.TYPE_SINT32: INT32, F.TYPE_SFIXED32: INT32,
    F.TYPE_INT64: INT64, F.TYPE_SINT64: INT64, F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT32: UINT32, F.TYPE_FIXED32: UINT32, F.TYPE_UINT64: UINT64, F.TYPE_FIXED64: UINT64,
}
ODD_TEXT = ["", " ", "../..", "\x00", "%s%n", "{\"a\": 1}", "'\"", "é😀", "\u202e", "* * * * *", "UTC",
            "http://[::1", "http://127.0.0.1:1/", "javascript:alert(1)", "#x", "a" * 65, "0" * 24]


# Descriptors come typed as the pure-Python or the upb class; both serve here.
Desc = Any


def message_class(desc: Desc) -> type[Message]:
    return message_factory.GetMessageClass(desc)


@dataclass
class Known:
    """What the fuzz has to point valid requests at, and what it got accepted."""

    queues: list[str]
    job_ids: list[str]
    schedule_ids: list[str]
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> its queue ('' unknown)
    cleaned: set[str] = field(default_factory=set)  # queues CleanQueue deleted jobs from
    problems: list[str] = field(default_factory=list)
    calls: int = 0


class Fuzzer:
    def __init__(self, rng: random.Random, known: Known) -> None:
        self.rng = rng
        self.known = known

    # ---- values ---------------------------------------------------------------
    def text(self, name: str = "", small: bool = False) -> str:
        r, k = self.rng, self.known
        if name in ("queue",) and r.random() < 0.7:
            return r.choice(k.queues)
        if name in ("id", "job_id") and r.random() < 0.5:
            return r.choice(k.job_ids + k.schedule_ids)
        roll = r.random()
        if roll < 0.25:
            return r.choice(ODD_TEXT)
        if roll < 0.4:
            return r.choice(k.queues + k.job_ids + k.schedule_ids)
        if roll < 0.5:
            return r.choice("xé#/") * r.choice([100, 300] if small else [1_000, 10_000, 100_000, 300_000])
        return "".join(r.choice("abcAZ09_-.:/ #*?[]") for _ in range(r.randint(1, 30)))

    def integer(self, t: int) -> int:
        lo, hi = INT_RANGES[t]
        return self.rng.choice([0, 1, -1, 2, 3, 100, lo, hi, lo + 1, hi - 1, self.rng.randint(lo, hi),
                                self.rng.randint(-1000, 1000)]) if lo < 0 else self.rng.choice(
            [0, 1, 2, hi, hi - 1, self.rng.randint(lo, hi), self.rng.randint(0, 1000)])

    def scalar(self, f: Desc, small: bool = False) -> Any:
        r = self.rng
        if f.type == F.TYPE_STRING:
            return self.text(f.name, small)
        if f.type == F.TYPE_BYTES:
            return r.randbytes(r.choice([0, 1, 10] if small else [0, 1, 10, 1000, 200_000]))
        if f.type == F.TYPE_BOOL:
            return r.random() < 0.5
        if f.type == F.TYPE_ENUM:
            values = [v.number for v in f.enum_type.values]
            return r.choice(values) if r.random() < 0.7 else r.choice([-1, 99, 2**31 - 1, -(2**31)])
        if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return r.choice([0.0, -1.0, 1e300 if f.type == F.TYPE_DOUBLE else 1e30, float("inf"), float("nan")])
        return self.integer(f.type)

    def time_like(self, msg: Message) -> None:
        """A Duration or a Timestamp: ordinary, at or beyond protobuf's range, mixed signs."""
        r = self.rng
        seconds = r.choice([0, 1, 60, 3600, -1, 315_576_000_000, 315_576_000_001, 253_402_300_800,
                            -62_135_596_801, 2**63 - 1, -(2**63), r.randint(-(10**12), 10**12)])
        nanos = r.choice([0, 1, 999_999_999, 1_000_000_000, -1, -999_999_999, 2**31 - 1, -(2**31)])
        msg.seconds, msg.nanos = seconds, nanos  # type: ignore[attr-defined]

    def fill(self, msg: Message, depth: int = 0, small: bool = False) -> None:
        """Random values in about half of the fields of `msg`; `small` (inside a
        repeated field made long) keeps the values short so the request stays sendable."""
        r = self.rng
        desc = msg.DESCRIPTOR
        if desc.full_name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
            self.time_like(msg)
            return
        for f in desc.fields:
            if r.random() < 0.5:
                continue
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                target = getattr(msg, f.name)
                key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                for _ in range(r.choice([1, 2, 5, 70, 500] if not small else [1, 2])):
                    key = self.scalar(key_f, small)
                    if value_f.message_type is None:
                        target[key] = self.scalar(value_f, small)
                continue
            if f.is_repeated:
                count = r.choice(([0, 1, 2, 3, 17, 101, 1001] if depth == 0 else [0, 1, 2, 3, 17])
                                 if not small else [0, 1, 2])
                items = getattr(msg, f.name)
                if f.message_type is not None:
                    if depth >= 3:
                        continue
                    distinct = []
                    for _ in range(min(count, 2)):
                        item = message_class(f.message_type)()
                        self.fill(item, depth + 1, small or count > 3)
                        distinct.append(item)
                    for i in range(count):
                        items.add().CopyFrom(distinct[i % len(distinct)])
                else:
                    value = self.scalar(f, small or count > 3)
                    items.extend([value if r.random() < 0.8 else self.scalar(f, True) for _ in range(count)])
                continue
            if f.message_type is not None:
                if depth < 4:
                    self.fill(getattr(msg, f.name), depth + 1, small)
                    getattr(msg, f.name).SetInParent()
                continue
            setattr(msg, f.name, self.scalar(f, small))

    # ---- requests ---------------------------------------------------------------
    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 2, 5, 20, 100, 1000]))

    def mutated(self, seed: bytes) -> bytes:
        r = self.rng
        data = bytearray(seed)
        for _ in range(r.randint(1, 6)):
            op = r.random()
            pos = r.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = r.randrange(256)
            elif op < 0.6:
                data[pos:pos] = r.randbytes(r.randint(1, 8))
            elif op < 0.8 and data:
                del data[pos:pos + r.randint(1, 8)]
            elif data:
                cut = r.randrange(len(data))
                data[pos:pos] = data[cut:cut + r.randint(1, 40)]
        return bytes(data)

    def shaped(self, cls: type[Message], seed: Message | None) -> bytes:
        """A well-formed message of random values, at most MAX_SHAPED bytes."""
        for _ in range(5):
            msg = cls()
            if seed is not None and self.rng.random() < 0.6:
                msg.CopyFrom(seed)
            self.fill(msg)
            raw = msg.SerializeToString()
            if len(raw) <= MAX_SHAPED:
                return raw
        return seed.SerializeToString() if seed is not None else b""


def seeds(known: Known) -> dict[str, Message]:
    """A valid request of each RPC, pointed at the fuzz's own queues, jobs and schedules."""
    q, job, sched = known.queues[0], known.job_ids[0], known.schedule_ids[0]
    noop = submit_request({"queue": q, "noop": {"sleep": "0.05s"}, "labels": {"k": "v"}})
    web = submit_request({"queue": q, "delay": "3600s", "browser": {
        "files": [{"name": "a.txt", "content": "aGk="}],
        "steps": [
            {"navigate": {"url": "http://127.0.0.1:9/form.html"}},
            {"fill": {"target": {"selector": "#name", "fallbacks": ["#n"]}, "text": "Ada"}},
            {"type": {"target": {"selector": "#t"}, "text": "x", "delay": "0.01s"}},
            {"wait": {"duration": "0.1s"}},
            {"expect": {"target": {"selector": "#out"}, "count": 1}},
            {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
            {"upload": {"target": {"selector": "#f"}, "files": ["a.txt"]}, "timeout": "2s"},
        ]}})
    return {
        "SubmitJob": noop,
        "SubmitJobs": pb.SubmitJobsRequest(requests=[noop, web]),
        "GetJob": pb.GetJobRequest(id=job),
        "ListJobs": pb.ListJobsRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED, page_size=5),
        "WatchJob": pb.WatchJobRequest(id=job, after_sequence=0),
        "WaitJob": pb.WaitJobRequest(id=job, timeout={"seconds": 0, "nanos": 100_000_000}),  # type: ignore[arg-type]
        "CancelJob": pb.CancelJobRequest(id=known.job_ids[-1]),
        "RetryJob": pb.RetryJobRequest(id=job),
        "GetArtifact": pb.GetArtifactRequest(job_id=job, name="screenshot-1.png"),
        "ListQueues": qpb.ListQueuesRequest(page_size=2),
        "GetQueue": qpb.GetQueueRequest(queue=q),
        "UpdateQueue": qpb.UpdateQueueRequest(queue=q, concurrency=4, host_rate_limit=2),
        "PauseQueue": qpb.PauseQueueRequest(queue=q),
        "ResumeQueue": qpb.ResumeQueueRequest(queue=q),
        "CleanQueue": qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED,
                                            older_than={"seconds": 3600}, limit=5),  # type: ignore[arg-type]
        "RetryFailedJobs": qpb.RetryFailedJobsRequest(queue=q, limit=5),
        "WatchQueue": qpb.WatchQueueRequest(queue=q, after_sequence=0, max_batch_size=10),
        "ListWorkers": qpb.ListWorkersRequest(),
        "CreateSchedule": spb.CreateScheduleRequest(
            cron="*/5 * * * *", time_zone="Europe/Berlin", name="fuzz",
            template=submit_request({"queue": q, "delay": "1s", "noop": {}})),
        "ListSchedules": spb.ListSchedulesRequest(page_size=2),
        "GetSchedule": spb.GetScheduleRequest(id=sched),
        "DeleteSchedule": spb.DeleteScheduleRequest(id=sched),
        "PauseSchedule": spb.PauseScheduleRequest(id=sched),
        "ResumeSchedule": spb.ResumeScheduleRequest(id=sched),
    }


def trailer_bytes(err: grpc.aio.AioRpcError) -> int:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return len(value)
    return 0


async def call_raw(
    channel: grpc.aio.Channel, path: str, method: descriptor.MethodDescriptor, raw: bytes, known: Known, how: str
) -> None:
    """One raw call; what it shows that should not be goes to known.problems."""
    known.calls += 1
    started = time.monotonic()
    response: bytes | None = None
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                raw, timeout=DEADLINE_S)
            try:
                for _ in range(STREAM_MESSAGES):
                    if await stream.read() is grpc.aio.EOF:
                        break
            finally:
                stream.cancel()
        else:
            response = await channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                raw, timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as err:
        code, size = err.code(), trailer_bytes(err)
        own = code in OWN_CODES and (code is grpc.StatusCode.CANCELLED
                                     or time.monotonic() - started >= DEADLINE_S * 0.9)
        if code not in DOCUMENTED and not own:
            known.problems.append(f"{path} ({how}): {code.name} {(err.details() or '')[:200]!r} "
                                  f"for {raw[:60].hex()}{'…' if len(raw) > 60 else ''}")
        if size >= MAX_TRAILER:
            known.problems.append(f"{path} ({how}): a {size}-byte details trailer ({code.name})")
        return
    if response is not None:
        record_accepted(method.name, raw, response, known)


def record_accepted(name: str, raw: bytes, response: bytes, known: Known) -> None:
    if name == "SubmitJob":
        out = pb.SubmitJobResponse.FromString(response)
        known.accepted[out.id] = queue_of(raw, lambda r: pb.SubmitJobRequest.FromString(r).queue)
    elif name == "SubmitJobs":
        batch = pb.SubmitJobsResponse.FromString(response)
        for i, result in enumerate(batch.results):
            if result.id:
                known.accepted[result.id] = queue_of(
                    raw, lambda r, i=i: pb.SubmitJobsRequest.FromString(r).requests[i].queue)  # type: ignore[misc]
    elif name == "CleanQueue" and qpb.CleanQueueResponse.FromString(response).deleted:
        known.cleaned.add(queue_of(raw, lambda r: qpb.CleanQueueRequest.FromString(r).queue))


def queue_of(raw: bytes, read: Callable[[bytes], str]) -> str:
    try:
        return read(raw) or "default"
    except Exception:  # the server read it, this client could not: unknown
        return ""


@pytest.fixture(scope="module")
def fuzz_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway and an executor of the fuzz's own: it pauses queues, cleans them and
    makes schedules, none of which may reach the shared stack's tests."""
    data = tmp_path_factory.mktemp("fuzz")
    s = Stack(redis_url, stack_env(redis_url, data), data / "logs")
    s.start_gateway()
    s.start_executor()
    yield s
    s.stop()
    s.print_problems()


async def make_known(channel: grpc.aio.Channel) -> Known:
    jobs, schedules = JobServiceStub(channel), ScheduleServiceStub(channel)
    queues = [unique_queue(PREFIX) for _ in range(3)]
    ids = []
    bodies: list[dict[str, Any]] = [{"noop": {}}, {"delay": "3600s", "noop": {}},
                                    {"maxAttempts": 1, "noop": {"failFirstAttempts": 1}}, {"noop": {"sleep": "60s"}}]
    for body in bodies:
        ids.append((await jobs.SubmitJob(submit_request({"queue": queues[0], **body}))).id)
    created = await schedules.CreateSchedule(spb.CreateScheduleRequest(
        cron="0 0 1 1 *", template=submit_request({"queue": queues[1], "noop": {}})))
    known = Known(queues=queues, job_ids=ids, schedule_ids=[created.schedule.id])
    known.accepted.update({job_id: queues[0] for job_id in ids})
    return known


async def test_fuzz_every_rpc(fuzz_stack: Stack) -> None:
    rng = random.Random(SEED)
    async with grpc.aio.insecure_channel(fuzz_stack.grpc_target) as channel:
        known = await make_known(channel)
        valid = seeds(known)
        fuzzer = Fuzzer(rng, known)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(path: str, method: descriptor.MethodDescriptor, raw: bytes, how: str) -> None:
            async with limit:
                await call_raw(channel, path, method, raw, known, how)

        for path, method in METHODS:
            cls = message_class(method.input_type)
            seed = valid.get(method.name)
            seed_bytes = seed.SerializeToString() if seed is not None else b""
            batch = (
                [(fuzzer.random_bytes(), "random bytes") for _ in range(RANDOM_BYTES)]
                + [(fuzzer.mutated(seed_bytes), "mutated") for _ in range(MUTATED)]
                + [(fuzzer.shaped(cls, seed), "shaped") for _ in range(SHAPED)]
            )
            await asyncio.gather(*(one(path, method, raw, how) for raw, how in batch))

        # Healthy afterwards.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # Every job it accepted reads, and is listed (unless CleanQueue took it).
        jobs = JobServiceStub(channel)
        listed: set[str] = set()
        token = ""
        for _ in range(200):
            try:
                page = await jobs.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), timeout=30)
            except grpc.aio.AioRpcError as err:
                known.problems.append(f"ListJobs of every queue: {err.code().name} {err.details()}")
                break
            listed.update(j.id for j in page.jobs)
            token = page.next_page_token
            if not token:
                break
        for job_id, queue in known.accepted.items():
            may_be_cleaned = queue in known.cleaned or (queue == "" and bool(known.cleaned))
            try:
                await jobs.GetJob(pb.GetJobRequest(id=job_id), timeout=10)
            except grpc.aio.AioRpcError as err:
                if not (err.code() == grpc.StatusCode.NOT_FOUND and may_be_cleaned):
                    known.problems.append(f"GetJob of accepted job {job_id}: {err.code().name} {err.details()}")
                continue
            if job_id not in listed and not may_be_cleaned:
                known.problems.append(f"accepted job {job_id} (queue {queue!r}) is not listed by ListJobs")

    assert known.calls >= len(METHODS) * (RANDOM_BYTES + MUTATED + SHAPED)
    assert len(known.accepted) > 4, "the fuzz got nothing accepted: its valid seeds are not valid"
    assert not known.problems, f"{len(known.problems)} problems:\n" + "\n".join(known.problems[:40])


def test_fuzz_covers_every_rpc_of_the_contract() -> None:
    names = {m.name for _, m in METHODS}
    assert {"SubmitJob", "WatchJob", "CleanQueue", "WatchQueue", "CreateSchedule", "ResumeSchedule"} <= names
    assert len(METHODS) == sum(len(svc.methods) for svc in SERVICES)
