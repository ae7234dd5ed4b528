"""What the store holds, as plain Python: jobs, events, queues. Parsed from Redis
replies here and nowhere else; serialized task/result/error bytes stay opaque."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any


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


def text_of(value: bytes | None) -> str:
    """A hash field's text ('' when missing; bytes that are not UTF-8 replaced)."""
    return value.decode(errors="replace") if value is not None else ""


def int_of(value: bytes | None) -> int:
    """A hash field's integer (0 when missing, empty or not a number; Lua's exponent
    form, "1e+20", read as the number it is): no stored value makes a read fail."""
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            return 0


def json_of(value: bytes | None, default: Any) -> Any:
    """A hash field's JSON (`default` when missing or not JSON)."""
    try:
        return json.loads(value) if value else default
    except ValueError:
        return default


def _priority_of(value: bytes | None) -> Priority:
    try:
        return Priority(int_of(value) or Priority.NORMAL)
    except ValueError:
        return Priority.NORMAL


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    start_ms: int
    end_ms: int
    outcome: State
    error: bytes | None
    worker: str

    @classmethod
    def from_job_hash(cls, h: dict[bytes, bytes]) -> list[AttemptRecord]:
        """The attempts recorded in a job's hash: its fields '@<n>:<name>', and for its
        last attempt, which has none of those while it is the last (attempt_fields in
        lua/includes/samples.lua), the job's own 'started', 'worker', 'ended', 'error'
        and state. (A job claimed by an earlier version has '@<n>:' fields for its
        running attempt, outcome ACTIVE: the job's end, when it has one, completes them.)"""
        by_attempt: dict[int, dict[str, bytes]] = {}
        for key, value in h.items():
            if key.startswith(b"@"):
                n, _, name = key[1:].decode().partition(":")
                by_attempt.setdefault(int(n), {})[name] = value
        last = int_of(h.get(b"attempt"))
        if last > 0 and (last in by_attempt or b"started" in h):
            f = by_attempt.setdefault(last, {})
            state = text_of(h.get(b"state"))
            ended = state in TERMINAL_STATES
            for name, field in (("start", b"started"), ("worker", b"worker")):
                if name not in f and field in h:
                    f[name] = h[field]
            if text_of(f.get("outcome")) in ("", State.ACTIVE.value):
                f["outcome"] = state.encode() if ended else State.ACTIVE.value.encode()
                if ended and b"ended" in h:
                    f["end"] = h[b"ended"]
                if state != State.COMPLETED.value and ended and b"error" in h:
                    f["error"] = h[b"error"]
        return [
            cls(attempt=n, start_ms=int_of(f.get("start")), end_ms=int_of(f.get("end")),
                outcome=State(text_of(f.get("outcome")) or State.ACTIVE.value), error=f.get("error") or None,
                worker=text_of(f.get("worker")))
            for n, f in sorted(by_attempt.items())
        ]


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
    ready_ms: int = 0
    depends_on: tuple[str, ...] = ()
    dedup_key: str = ""
    attempts: tuple[AttemptRecord, ...] = ()

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> JobRecord:
        labels = json_of(h.get(b"labels"), {})
        deps = json_of(h.get(b"depends_on"), [])
        return cls(
            id=text_of(h[b"id"]),
            queue=text_of(h[b"queue"]),
            owner=text_of(h.get(b"owner")),
            state=State(text_of(h[b"state"])),
            priority=_priority_of(h.get(b"priority")),
            attempt=int_of(h.get(b"attempt")),
            attempt_limit=int_of(h.get(b"limit")),
            attempts_per_set=int_of(h.get(b"max")),
            timeout_ms=int_of(h.get(b"timeout_ms")),
            created_ms=int_of(h.get(b"created")),
            started_ms=int_of(h.get(b"started")),
            ended_ms=int_of(h.get(b"ended")),
            run_at_ms=int_of(h.get(b"run_at")),
            progress=int_of(h.get(b"progress")),
            progress_message=text_of(h.get(b"pmsg")),
            last_sequence=int_of(h.get(b"seq")),
            spec=h.get(b"spec", b""),
            kind=text_of(h.get(b"kind")),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            result=h.get(b"result") or None,
            error=h.get(b"error") or None,
            cancel_requested=h.get(b"cancel") == b"1",
            handed_over=h.get(b"handed") == b"1",
            worker=text_of(h.get(b"worker")),
            request_id=text_of(h.get(b"request_id")),
            position=int_of(h.get(b"_position")),
            ready_ms=int_of(h.get(b"ready")),
            depends_on=tuple(str(d) for d in deps) if isinstance(deps, list) else (),
            dedup_key=text_of(h.get(b"dedup")).rsplit(":", 1)[-1] if h.get(b"dedup") else "",
            attempts=tuple(AttemptRecord.from_job_hash(h)),
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
    def from_fields(cls, f: dict[bytes, Any]) -> EventRecord:
        # Every event a gateway streams passes here: plain lookups, no enum calls.
        get = f.get
        p, si, m, sn = get(b"p"), get(b"si"), get(b"m"), get(b"sn")
        return cls(
            f[b"j"].decode(),
            f[b"q"].decode(),
            int(f[b"s"]),
            int(get(b"qs") or 0),
            _EVENT_TYPES[f[b"t"]],
            _STATES[f[b"st"]],
            int(get(b"a") or 0),
            int(get(b"ts") or 0),
            int(p) if p is not None else None,
            m.decode() if m else "",
            int(si) if si is not None else None,
            sn.decode() if sn else "",
            get(b"e") or None,
        )


_STATES = {s.value.encode(): s for s in State}
_EVENT_TYPES = {t.value.encode(): t for t in EventType}


@dataclass(frozen=True)
class QueueCounts:
    waiting: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class QueueStats:
    completed_per_minute: tuple[int, ...] = ()
    failed_per_minute: tuple[int, ...] = ()
    wait_ms: tuple[int, ...] = ()  # recent samples, any order
    run_ms: tuple[int, ...] = ()

    def percentile(self, kind: str, p: float) -> int:
        values = sorted(self.wait_ms if kind == "wait" else self.run_ms)
        if not values:
            return 0
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

    @property
    def mean_run_ms(self) -> float:
        return sum(self.run_ms) / len(self.run_ms) if self.run_ms else 0.0


@dataclass(frozen=True)
class QueueRecord:
    name: str
    paused: bool
    concurrency: int
    counts: QueueCounts = field(default_factory=QueueCounts)
    host_rate_limit: int = 0
    stats: QueueStats = field(default_factory=QueueStats)
    last_sequence: int = 0

    @classmethod
    def from_hash(
        cls, name: str, h: dict[bytes, bytes], default_concurrency: int, stats: QueueStats | None = None
    ) -> QueueRecord:
        counts = QueueCounts(**{s.value.lower(): int_of(h.get(s.value.encode())) for s in State})
        return cls(
            name=name,
            paused=h.get(b"paused") == b"1",
            concurrency=int_of(h.get(b"concurrency")) or default_concurrency,
            counts=counts,
            host_rate_limit=int_of(h.get(b"host_rate_limit")),
            stats=stats or QueueStats(),
            last_sequence=int_of(h.get(b"qseq")),
        )

    def share(self, h: dict[bytes, bytes]) -> QueueRecord:
        """This queue as one tenant sees it, from its share's hash (k_queue_tenant): its
        own jobs' counts, paused when the queue or its share is, its share's concurrency
        when it set one, and of the stats the wait and run times (the throughput counts
        every tenant's jobs)."""
        counts = QueueCounts(**{s.value.lower(): max(0, int_of(h.get(s.value.encode()))) for s in State})
        return replace(
            self,
            counts=counts,
            stats=QueueStats(wait_ms=self.stats.wait_ms, run_ms=self.stats.run_ms),
            paused=self.paused or h.get(b"paused") == b"1",
            concurrency=min(self.concurrency, int_of(h.get(b"concurrency")) or self.concurrency),
        )


@dataclass(frozen=True)
class StorePolicy:
    """What the Lua scripts need beyond a job: how admission hands jobs over (its
    limits, and the Dramatiq queue it writes hand-over messages into, see
    conveyor/transport.py) and how much finished history a queue keeps."""

    transport_namespace: str
    transport_queue: str
    actor_name: str
    default_concurrency: int = 16
    handover_timeout_ms: int = 10_000
    batch: int = 500
    keep_completed: int = 100
    keep_failed: int = 200
    max_age_ms: int = 7 * 24 * 3600 * 1000
    #: A transport worker (an executor worker process) whose Dramatiq heartbeat is
    #: older than this is dead: its outstanding deliveries go back to the queue.
    worker_timeout_ms: int = 15_000
    #: The most jobs one tenant may have handed over or running at once; 0: no limit.
    tenant_max_running: int = 0
    #: Replicas that must have a submitted job before its submit is answered (Redis
    #: WAIT after submit.lua; CONVEYOR_REDIS_WAIT_REPLICAS), and how long to wait for them.
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000

    def args(self, max_jobs: int | None = None) -> list[str | int]:
        """The policy arguments of the Lua scripts (transport_args in lua/includes/admission.lua)."""
        return [max_jobs or self.batch, self.default_concurrency, self.handover_timeout_ms,
                self.transport_namespace, self.transport_queue, self.actor_name,
                self.keep_completed, self.keep_failed, self.max_age_ms, self.tenant_max_running]


@dataclass(frozen=True)
class Handover:
    """A job admission handed to the executors: run attempt `attempt` of job `job_id`."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class Delivery:
    """The transport message that carried a hand-over: acknowledged by the store in the
    same script that finishes the attempt (see finish.lua)."""

    worker_id: str
    message_id: str
    #: The Dramatiq queue it was taken from (its kind's, or the transport queue).
    queue: str = ""


@dataclass(frozen=True)
class Finish:
    """The end of a running attempt, as the executor reports it (see finish.lua).
    `outcome` is 'completed' (payload: the serialized result), 'failed' (payload: the
    serialized error; with `retry_in_ms`, a retry that long from now while attempts
    remain) or 'cancelled' (payload: the serialized error)."""

    job_id: str
    attempt: int
    outcome: str
    payload: bytes
    retry_in_ms: int | None = None
    delivery: Delivery | None = None

    def args(self) -> list[str | int | bytes]:
        delivery = self.delivery
        return [self.job_id, self.attempt, self.outcome, self.payload,
                -1 if self.retry_in_ms is None else self.retry_in_ms,
                delivery.worker_id if delivery else "", delivery.message_id if delivery else "",
                delivery.queue if delivery else ""]


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
    delivery: Delivery | None = None
    #: The job's trace context as stored at create ('' for none; see conveyor/tracing.py).
    trace: str = ""
    #: When this attempt's wait began (ms): the job's creation for the first attempt.
    waited_from_ms: int = 0

    @classmethod
    def from_reply(cls, job_id: str, attempt: int, reply: list[Any], delivery: Delivery | None = None) -> Claim:
        """From claim_job's reply in lua/includes/executor.lua:
        {1, spec, timeout_ms, limit, kind, queue, trace, waited_from}."""
        _, spec, timeout_ms, limit, kind, queue, trace, waited_from = reply
        return cls(job_id, attempt, spec, int(timeout_ms), int(limit), kind.decode(), queue.decode(), delivery,
                   trace.decode() if trace else "", int(waited_from or 0))


#: Entries per message in take.lua's reply.
TAKE_STRIDE = 11


@dataclass(frozen=True)
class TakenMessage:
    """A message taken off the transport queue: its data and Redis message id, and
    the claim of its job (None for a message that is not a hand-over: its actor then
    claims the job itself)."""

    data: bytes
    message_id: str
    claim: Claim | None
    #: The Dramatiq queue it was taken from.
    queue: str = ""


@dataclass(frozen=True)
class Taken:
    """What one take got: the messages it popped (stale deliveries among them were
    acknowledged and left out of `messages`)."""

    popped: int
    messages: list[TakenMessage]


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
    dedup_key: str = ""
    dedup_window_ms: int = 0
    dedup_return_existing: bool = False
    depends_on: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    #: The most open (waiting, delayed, running) jobs its tenant may have; 0: no limit.
    max_open: int = 0
    #: The most jobs its tenant may submit in one second; 0: no limit.
    max_rate: int = 0
    #: Its tenant's fair-share weight within a priority (see fair_tag in lua/includes/line.lua).
    weight: int = 1
    #: The trace context it is submitted in ('' for none; see conveyor/tracing.py).
    trace: str = ""

    def to_json(self) -> str:
        """The job as create_job() in lua/includes/create.lua reads it (the spec travels apart: it is bytes)."""
        data: dict[str, object] = {
            "id": self.id, "queue": self.queue, "owner": self.owner, "priority": int(self.priority),
            "max_attempts": self.max_attempts, "timeout_ms": self.timeout_ms, "run_at": self.run_at_ms,
            "request_id": self.request_id, "kind": self.kind, "labels": self.labels,
        }
        if self.dedup_key:
            data.update(dedup_key=self.dedup_key, dedup_window_ms=self.dedup_window_ms,
                        dedup_return_existing=self.dedup_return_existing)
        if self.depends_on:
            data["depends_on"] = list(self.depends_on)
        if self.hosts:
            data["hosts"] = list(self.hosts)
        if self.max_open:
            data["max_open"] = self.max_open
        if self.max_rate:
            data["max_rate"] = self.max_rate
        if self.weight != 1:
            data["weight"] = self.weight
        if self.trace:
            data["trace"] = self.trace
        return json.dumps(data)


@dataclass(frozen=True)
class Submitted:
    id: str
    state: State
    position: int
    existing: bool


@dataclass(frozen=True)
class ExecutorRecord:
    """One live executor worker process, as its heartbeat registered it."""

    id: str
    slots: int
    running_job_ids: tuple[str, ...]
    seen_ms: int
    host: str
    pid: int
    completed: int
    kinds: tuple[str, ...] = ()

    @classmethod
    def from_hash(cls, executor_id: str, h: dict[bytes, bytes]) -> ExecutorRecord:
        info = json.loads(h.get(b"info", b"{}"))
        return cls(
            id=executor_id,
            slots=int_of(h.get(b"slots")),
            running_job_ids=tuple(json.loads(h.get(b"jobs", b"[]"))),
            seen_ms=int_of(h.get(b"seen")),
            host=str(info.get("host", "")),
            pid=int(info.get("pid", 0)),
            completed=int(info.get("completed", 0)),
            kinds=tuple(str(k) for k in json_of(h.get(b"kinds"), [])),
        )
