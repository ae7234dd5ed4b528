"""What the store holds, as plain Python: jobs, events, queues. Parsed from Redis
replies here and nowhere else; serialized task/result/error bytes stay opaque."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class State(StrEnum):
    WAITING = "WAITING"
    DELAYED = "DELAYED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})


class Priority(IntEnum):
    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4
    BULK = 5


def _s(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _i(value: bytes | None) -> int:
    return int(value) if value else 0


@dataclass(frozen=True)
class JobRecord:
    id: str
    queue: str
    owner: str
    state: State
    priority: Priority
    attempt: int
    attempt_limit: int
    attempts_per_set: int
    timeout_ms: int
    created_ms: int
    started_ms: int
    ended_ms: int
    run_at_ms: int
    progress: int
    progress_message: str
    last_sequence: int
    spec: bytes
    kind: str
    labels: dict[str, str]
    result: bytes | None
    error: bytes | None
    cancel_requested: bool
    handed_over: bool
    worker: str
    request_id: str
    position: int

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> JobRecord:
        labels = h.get(b"labels")
        return cls(
            id=_s(h[b"id"]),
            queue=_s(h[b"queue"]),
            owner=_s(h.get(b"owner")),
            state=State(_s(h[b"state"])),
            priority=Priority(_i(h.get(b"priority")) or Priority.NORMAL),
            attempt=_i(h.get(b"attempt")),
            attempt_limit=_i(h.get(b"limit")),
            attempts_per_set=_i(h.get(b"max")),
            timeout_ms=_i(h.get(b"timeout_ms")),
            created_ms=_i(h.get(b"created")),
            started_ms=_i(h.get(b"started")),
            ended_ms=_i(h.get(b"ended")),
            run_at_ms=_i(h.get(b"run_at")),
            progress=_i(h.get(b"progress")),
            progress_message=_s(h.get(b"pmsg")),
            last_sequence=_i(h.get(b"seq")),
            spec=h.get(b"spec", b""),
            kind=_s(h.get(b"kind")),
            labels=json.loads(labels) if labels else {},
            result=h.get(b"result") or None,
            error=h.get(b"error") or None,
            cancel_requested=h.get(b"cancel") == b"1",
            handed_over=h.get(b"handed") == b"1",
            worker=_s(h.get(b"worker")),
            request_id=_s(h.get(b"request_id")),
            position=_i(h.get(b"_position")),
        )


class EventType(StrEnum):
    STATE = "state"
    PROGRESS = "progress"


@dataclass(frozen=True)
class EventRecord:
    job_id: str
    queue: str
    sequence: int
    queue_sequence: int
    type: EventType
    state: State
    attempt: int
    time_ms: int
    progress: int | None = None
    message: str = ""
    step_index: int | None = None
    step_name: str = ""
    error: bytes | None = None

    @property
    def terminal(self) -> bool:
        return self.type is EventType.STATE and self.state.terminal

    @classmethod
    def from_fields(cls, f: dict[bytes, bytes]) -> EventRecord:
        return cls(
            job_id=_s(f[b"j"]),
            queue=_s(f[b"q"]),
            sequence=_i(f[b"s"]),
            queue_sequence=_i(f.get(b"qs")),
            type=EventType(_s(f[b"t"])),
            state=State(_s(f[b"st"])),
            attempt=_i(f.get(b"a")),
            time_ms=_i(f.get(b"ts")),
            progress=_i(f[b"p"]) if b"p" in f else None,
            message=_s(f.get(b"m")),
            step_index=_i(f[b"si"]) if b"si" in f else None,
            step_name=_s(f.get(b"sn")),
            error=f.get(b"e") or None,
        )


@dataclass(frozen=True)
class QueueCounts:
    waiting: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class QueueRecord:
    name: str
    paused: bool
    concurrency: int
    counts: QueueCounts = field(default_factory=QueueCounts)

    @classmethod
    def from_hash(cls, name: str, h: dict[bytes, bytes], default_concurrency: int) -> QueueRecord:
        counts = QueueCounts(**{s.value.lower(): _i(h.get(s.value.encode())) for s in State})
        return cls(
            name=name,
            paused=h.get(b"paused") == b"1",
            concurrency=_i(h.get(b"concurrency")) or default_concurrency,
            counts=counts,
        )


@dataclass(frozen=True)
class AdmissionConfig:
    """How admission hands jobs over: its limits, and the Dramatiq queue the Lua
    scripts write hand-over messages into (see conveyor/transport.py)."""

    transport_namespace: str
    transport_queue: str
    actor_name: str
    default_concurrency: int = 16
    handover_timeout_ms: int = 10_000
    batch: int = 500

    def args(self, max_jobs: int | None = None) -> list[str | int]:
        """The six transport arguments of the Lua scripts (transport_args in _lib.lua)."""
        return [max_jobs or self.batch, self.default_concurrency, self.handover_timeout_ms,
                self.transport_namespace, self.transport_queue, self.actor_name]


@dataclass(frozen=True)
class Handover:
    """A job admission handed to the executors: run attempt `attempt` of job `job_id`."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class Claim:
    """What an executor gets when its claim succeeds."""

    job_id: str
    attempt: int
    spec: bytes
    timeout_ms: int
    attempt_limit: int
    kind: str
    queue: str


@dataclass(frozen=True)
class NewJob:
    """A validated job to create (built by the gateway from a request)."""

    id: str
    queue: str
    owner: str
    priority: Priority
    max_attempts: int
    timeout_ms: int
    run_at_ms: int
    spec: bytes
    kind: str
    request_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    id: str
    state: State
    position: int
    existing: bool
