"""The job store: the one source of truth for jobs, their order and their events.

Every state change is one Lua script in lua/ that updates the job hash, its indexes
and counters and appends the event, atomically. Python never read-modify-writes a job.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from conveyor.errors import (
    ConveyorError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from conveyor.kinds.registry import KindSpec
from conveyor.queue_stats import HEAD_JOBS, Insights
from conveyor.redis_connection import connect as connect  # noqa: PLC0414 (re-exported: clients are made there)
from conveyor.redis_multiplex import BLOCK_GRACE_SECONDS, MultiplexedConnection
from conveyor.store.keys import Keys
from conveyor.store.records import (
    TAKE_STRIDE,
    Claim,
    Delivery,
    EventRecord,
    ExecutorRecord,
    Finish,
    Handover,
    JobRecord,
    NewJob,
    QueueRecord,
    QueueStats,
    State,
    StorePolicy,
    Submitted,
    Taken,
    TakenMessage,
)
from conveyor.store.records import int_of as _int
from conveyor.store.replies import Context, refused
from conveyor.store.scripts import is_missing, library

MAX_PAGE_SIZE = 1000
#: A page of ListJobs whose filters no one index answers reads at most this many jobs.
MAX_SCAN = 2000
#: The states whose jobs a tenant's own per-state index of a queue also holds
#: (TENANT_STATE_INDEX in lua/includes/base.lua): not ACTIVE, whose jobs the queue's
#: executors' slots bound, and WAITING, which is the tenant's line.
TENANT_STATE_INDEXES = frozenset({State.DELAYED, State.COMPLETED, State.FAILED, State.CANCELLED})
#: The most jobs of one score a page token skips (a token is the last score and a count).
MAX_PAGE_SKIP = 2**31
#: The newest timing samples a queue's statistics use (SAMPLES in lua/includes/samples.lua; the
#: lists are trimmed to that now and then, not on every push).
TIMING_SAMPLES = 1000
#: The most jobs of one submit_many.lua call: its counters are read and written once a
#: call, and a call of this many blocks Redis for a few milliseconds at most.
SUBMIT_CHUNK = 50


def _stream_event(fields: dict[bytes, bytes]) -> EventRecord:
    """An event of a queue's stream: one msgpack map in 'ev' (entries written before
    that format carry the map's fields as the entry's own)."""
    packed = fields.get(b"ev")
    return EventRecord.from_fields(msgpack.unpackb(packed, raw=True) if packed is not None else fields)


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _refused(job: NewJob, exc: ResponseError) -> ConveyorError:
    return refused(exc, Context(action="submit", dedup_key=job.dedup_key, request_id=job.request_id))


def _encode_token(score: float, skip: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, skip]).encode()).decode()


def _decode_token(token: str) -> tuple[float, int]:
    try:
        score, skip = json.loads(base64.urlsafe_b64decode(token.encode()))
        score, skip = float(score), int(skip)
        if not math.isfinite(score) or not 0 <= skip <= MAX_PAGE_SKIP:
            raise ValueError("out of range")
        return score, skip
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidArgument(FieldViolation("page_token", "not a token this server issued")) from exc


def _has_label(key: str, value: str) -> Callable[[JobRecord], bool]:
    return lambda job: job.labels.get(key) == value


class JobStore:
    def __init__(self, client: aioredis.Redis, prefix: str, policy: StorePolicy) -> None:
        # redis-py types every reply as a wide union; replies are parsed here by shape.
        self.client: Any = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.policy = policy
        self._library = library()
        # The client's one shared connection for scripts (conveyor/redis_multiplex.py),
        # when it has one (clients made by conveyor.redis_connection.connect do).
        self._multiplexed: MultiplexedConnection | None = getattr(client, "multiplexed", None)

    async def load_scripts(self) -> None:
        """Load the scripts' function library (at start: later calls load it again
        themselves when the server lost it). RuntimeError for a server older than
        Redis 7.0, which has no functions."""
        try:
            await self._library.load(self.client)
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise RuntimeError(f"Conveyor needs Redis 7.0 or newer (its scripts are a function library): {exc}") \
                    from None
            raise

    async def _run(self, name: str, *args: Any) -> Any:
        """Script `name` with the key prefix and `args`, on the shared connection when
        the client has one."""
        if self._multiplexed is not None:
            return await self._multiplexed.fcall(self._library, name, [self.prefix, *args])
        return await self._library.call(self.client, name, [self.prefix, *args])

    # ---- submit -------------------------------------------------------------------

    def _submit_args(self, jobs: Sequence[NewJob], admit: bool) -> list[list[Any]]:
        """submit.lua's arguments after the key prefix, per job: the job and its spec,
        and on the last one, with `admit`, the policy arguments (its admission serves
        the jobs of the scripts before it too)."""
        out: list[list[Any]] = [[job.to_json(), job.spec] for job in jobs]
        if admit and out:
            out[-1] += self.policy.args()
        return out

    @staticmethod
    def _submitted(reply: list[Any]) -> Submitted:
        return Submitted(
            id=reply[0].decode(), state=State(reply[1].decode()), position=int(reply[2]),
            existing=bool(reply[3]),
        )

    async def submit(self, job: NewJob, *, admit: bool = False) -> Submitted:
        """Create a job; with `admit`, waiting jobs are handed to free slots in the same
        script (replicated with it under CONVEYOR_REDIS_WAIT_REPLICAS), as dispatch()
        does: no round trip through the admission loop before a job that may run runs."""
        if self.policy.wait_replicas:
            (done,) = await self._submit_replicated([job], admit)
            if isinstance(done, ConveyorError):
                raise done
            return done
        (args,) = self._submit_args([job], admit)
        try:
            return self._submitted(await self._run("submit", *args))
        except ResponseError as exc:
            raise _refused(job, exc) from None

    async def _submit_replicated(self, jobs: Sequence[NewJob], admit: bool) -> list[Submitted | ConveyorError]:
        """submit.lua for each job then WAIT, pipelined on one connection (WAIT counts
        the replicas that have this connection's writes) in one round trip: a job is
        answered as submitted only once `policy.wait_replicas` replicas have it, else
        UNAVAILABLE (NOT_REPLICATED) within `policy.wait_timeout_ms`."""
        wanted = self.policy.wait_replicas
        # (A primary new since, a failover, may lack the library: loaded, and all sent again.)
        *replies, acked = await self._library.call_many(
            self.client, "submit", [[self.prefix, *args] for args in self._submit_args(jobs, admit)],
            then=[("WAIT", wanted, self.policy.wait_timeout_ms)])
        replicated = isinstance(acked, int) and acked >= wanted
        out: list[Submitted | ConveyorError] = []
        for job, reply in zip(jobs, replies, strict=True):
            if isinstance(reply, ResponseError):
                out.append(_refused(job, reply))
            elif replicated:
                out.append(self._submitted(reply))
            else:
                got, job_id = (acked if isinstance(acked, int) else 0), self._submitted(reply).id
                out.append(Unavailable(
                    f"job {job_id} is on the Redis primary but {got} of {wanted} replicas had it within "
                    f"{self.policy.wait_timeout_ms} ms (CONVEYOR_REDIS_WAIT_REPLICAS): a failover could lose it. "
                    "It may still run; submit it again with the same request_id to get it once it is replicated",
                    reason="NOT_REPLICATED", metadata={"job_id": job_id, "replicas": str(got), "wanted": str(wanted)},
                ))
        return out

    async def submit_many(self, jobs: Iterable[NewJob], *, admit: bool = False) -> list[Submitted | ConveyorError]:
        """Many submits in one pipelined round trip: submit_many.lua calls of up to
        SUBMIT_CHUNK jobs each (each call atomic). `jobs` may be made as they are taken
        (a generator): each call is written to Redis as soon as its jobs are made, so
        Redis creates them while the next are made. A job the store refuses (its
        deduplication key, its request id, its tenant's quota) is an error in its place.
        With `admit`, the last call admits waiting jobs (see submit)."""
        if self.policy.wait_replicas:
            jobs = list(jobs)
            return await self._submit_replicated(jobs, admit) if jobs else []
        made: list[NewJob] = []

        def calls() -> Iterator[list[Any]]:
            args: list[Any] = [self.prefix, 0]
            for job in jobs:
                made.append(job)
                args += (job.to_json(), job.spec)
                args[1] += 1
                if args[1] == SUBMIT_CHUNK:
                    yield args
                    args = [self.prefix, 0]
            if admit and made:  # (the last call admits: with no jobs of its own when they came out even)
                yield args + self.policy.args()
            elif args[1]:
                yield args

        if self._multiplexed is not None:
            replies = await self._multiplexed.fcall_stream(self._library, "submit_many", calls())
        else:
            replies = await self._library.call_many(self.client, "submit_many", list(calls()))
        out: list[Submitted | ConveyorError] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply  # (not a refusal, which is data: a script that failed)
            for r in reply:
                job = made[len(out)]
                out.append(_refused(job, ResponseError(r[0].decode())) if len(r) == 1 else self._submitted(r))
        return out

    # ---- read -----------------------------------------------------------------------

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        replies = await self._run("get", *job_ids)
        out: list[JobRecord | None] = []
        for reply in replies:
            if not reply:
                out.append(None)
                continue
            out.append(JobRecord.from_hash(_pairs(reply)))
        return out

    async def owners(self, job_ids: Sequence[str]) -> list[str | None]:
        """Each job's tenant (None for a job that is gone), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "owner")
        return [o.decode() if o is not None else None for o in await pipe.execute()]

    async def get(self, job_id: str) -> JobRecord:
        (job,) = await self.get_many([job_id])
        if job is None:
            raise NotFound(f"job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})
        return job

    async def list_jobs(
        self, *, queue: str = "", state: State | None = None, page_size: int = 50, page_token: str = "",
        kind: str = "", owner: str = "", labels: Mapping[str, str] | None = None,
    ) -> tuple[list[JobRecord], str]:
        """Jobs newest first (WAITING ones in line order), paged by (score, skip) tokens
        that stay correct while jobs are added: of a queue, in a state (needs the
        queue), of one kind (needs the queue); of one tenant with `owner`, each of those
        from an index of that tenant's own (its jobs, in a queue, in a state of a queue
        but ACTIVE, of a kind in a queue, with a label), so a tenant's pages are its own
        jobs whatever other tenants hold; with `labels`, only jobs that carry them all.
        What no one index answers (a kind and a state; several labels; a label and a
        queue; a label of every tenant's jobs; a tenant's ACTIVE jobs, among the
        queue's, which its executors' slots bound) is read from the narrowest index and
        the rest checked job by job:
        a page may then hold fewer than `page_size` jobs (at most MAX_SCAN are read for
        one), and its token goes on from where the reading stopped."""
        page_size = min(page_size or 50, MAX_PAGE_SIZE)
        labels = dict(labels or {})
        if (kind or state is not None) and not queue and not (labels and owner):
            raise InvalidArgument(FieldViolation("queue", "required when state or kind is given"))
        if kind and state is not None and not owner:
            raise InvalidArgument(FieldViolation("kind", "needs a queue, and no state"))
        ascending = False
        checked: list[Callable[[JobRecord], bool]] = []
        if labels and not owner:
            # Every tenant's jobs with a label (an admin's look): no index has them all.
            key = self.keys.queue_index(queue, "jobs") if queue else self.keys.jobs
            checked += [_has_label(k, v) for k, v in labels.items()]
            if kind:
                checked.append(lambda j: j.kind == kind)
            if state is not None:
                checked.append(lambda j: j.state is state)
        elif labels:
            first, *rest = sorted(labels.items())
            key = self.keys.owner_label(owner, *first)
            checked += [_has_label(k, v) for k, v in rest]
            if queue:
                checked.append(lambda j: j.queue == queue)
            if kind:
                checked.append(lambda j: j.kind == kind)
            if state is not None:
                checked.append(lambda j: j.state is state)
        elif owner and kind:
            key = self.keys.queue_index(queue, f"kind:{kind}:owner:{owner}")
            if state is not None:
                checked.append(lambda j: j.state is state)
        elif owner and state is State.WAITING:
            key, ascending = self.keys.tenant_line(queue, owner), True
        elif owner and state in TENANT_STATE_INDEXES:
            key = self.keys.queue_index(queue, f"{state.value.lower()}:owner:{owner}")
        elif owner and state is not None:
            # No index of the tenant's own (ACTIVE): the queue's, read for its jobs.
            key = self.keys.queue_index(queue, state.value.lower())
            checked.append(lambda j: j.state is state)
        elif owner:
            key = self.keys.queue_index(queue, f"owner:{owner}") if queue else self.keys.owner_jobs(owner)
        elif kind:
            key = self.keys.queue_index(queue, f"kind:{kind}")
        elif state is None:
            key = self.keys.queue_index(queue, "jobs") if queue else self.keys.jobs
        else:
            key, ascending = self.keys.queue_index(queue, state.value.lower()), state is State.WAITING
        bound: float | str = "-inf" if ascending else "+inf"
        skip = 0
        if page_token:
            bound, skip = _decode_token(page_token)
        jobs: list[JobRecord] = []
        scanned, exhausted = 0, False
        budget = MAX_SCAN if checked else page_size
        while len(jobs) < page_size and scanned < budget:
            want = page_size - len(jobs) if not checked else min(max(page_size - len(jobs), 100), budget - scanned)
            if ascending:
                rows = await self.client.zrangebyscore(key, bound, "+inf", start=skip, num=want, withscores=True)
            else:
                rows = await self.client.zrevrangebyscore(key, bound, "-inf", start=skip, num=want, withscores=True)
            found = await self.get_many([m.decode() for m, _ in rows])
            for (_, score), job in zip(rows, found, strict=True):
                # The cursor: the score of the last row read, and how many rows of that score were read.
                skip, bound = (skip + 1, bound) if score == bound else (1, score)
                scanned += 1
                if job is not None and (not owner or job.owner == owner) and all(check(job) for check in checked):
                    jobs.append(job)
                    if len(jobs) == page_size:
                        break
            else:
                if len(rows) < want:
                    exhausted = True
                    break
        token = "" if exhausted else _encode_token(float(bound), skip)
        return jobs, token

    async def events_after(self, job_id: str, after_sequence: int, count: int = 1000) -> list[EventRecord]:
        # Event n is element n - 1 of the job's log; its entries leave out the job id
        # and the sequence, which are known from where they are.
        rows = await self.client.lrange(self.keys.job_events(job_id), after_sequence, after_sequence + count - 1)
        job = job_id.encode()
        return [
            EventRecord.from_fields({**msgpack.unpackb(row, raw=True), b"j": job, b"s": b"%d" % (after_sequence + i)})
            for i, row in enumerate(rows, start=1)
        ]

    async def queue_events_after(self, queue: str, after_sequence: int, count: int = 1000) -> list[EventRecord]:
        """A queue's events after a queue sequence (the stream keeps the newest ~100,000)."""
        rows = await self.client.xrange(self.keys.queue_events(queue), f"(0-{after_sequence}", "+", count=count)
        return [_stream_event(fields) for _, fields in rows]

    async def queue_sequence(self, queue: str) -> int:
        """The queue sequence of the queue's newest event (0 before its first)."""
        return int(await self.client.hget(self.keys.queue(queue), "qseq") or 0)

    async def read_queue_events(
        self, after: Mapping[str, int], wake: tuple[str, str], *, block_ms: int, client: aioredis.Redis,
        count: int = 1000,
    ) -> tuple[dict[str, list[EventRecord]], str]:
        """Block until there are events on the queues' streams after the given queue
        sequences, or an entry on the wake stream `wake` (key, last id seen) after its
        last id. Returns each queue's new events (in order) and the wake stream's last id.
        `client` is the caller's alone (the store's own would be held up by the block)."""
        reader: Any = client
        streams: dict[str, str] = {self.keys.queue_events(q): f"0-{seq}" for q, seq in after.items()}
        wake_key, wake_seen = wake
        streams[wake_key] = wake_seen
        multiplexed: MultiplexedConnection | None = getattr(reader, "multiplexed", None)
        if multiplexed is not None:
            # The reader's shared connection (a client of the caller's alone: the read
            # blocks it), its raw RESP2 reply: each entry's fields a flat list.
            raw = await multiplexed.execute("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams,
                                            *streams.values(), within=block_ms / 1000 + BLOCK_GRACE_SECONDS)
            reply = [(stream, [(i, _pairs(f)) for i, f in rows]) for stream, rows in raw or ()]
        else:
            reply = await reader.xread(streams, count=count, block=block_ms)
        out: dict[str, list[EventRecord]] = {}
        head, tail = len(self.keys.queue("")), len(":events")
        for stream, rows in reply or ():
            name = stream.decode()
            if name == wake_key:
                wake_seen = rows[-1][0].decode()
            elif rows:
                out[name[head:-tail]] = [_stream_event(fields) for _, fields in rows]
        return out, wake_seen

    async def wake_reader(self, wake_key: str) -> None:
        """Wake an event hub blocked reading (see read_queue_events). The wake stream
        keeps a few entries, and goes away an hour after its last."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(wake_key, {"w": "1"}, maxlen=8, approximate=False)
        pipe.pexpire(wake_key, 3_600_000)
        await pipe.execute()

    async def get_queue(self, name: str, *, with_stats: bool = False, tenant: str = "") -> QueueRecord:
        """A queue's settings and counters (and, with_stats, its throughput and timing
        samples): a fixed number of small reads, whatever the number of jobs. With
        `tenant`, that tenant's share of it (see QueueRecord.share): a queue it has had
        no job in (nor set anything in) does not exist for it."""
        if await self.client.zscore(self.keys.queues, name) is None:
            raise NotFound(f"queue {name!r} not found", reason="QUEUE_NOT_FOUND", metadata={"queue": name})
        share: dict[bytes, bytes] = {}
        if tenant:
            share = await self.client.hgetall(self.keys.queue_tenant(name, tenant))
            if not share:
                raise NotFound(f"queue {name!r} not found", reason="QUEUE_NOT_FOUND", metadata={"queue": name})
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.queue(name))
        if with_stats:
            pipe.hgetall(self.keys.queue_index(name, "throughput"))
            pipe.lrange(self.keys.queue_index(name, "wait-ms"), 0, TIMING_SAMPLES - 1)
            pipe.lrange(self.keys.queue_index(name, "run-ms"), 0, TIMING_SAMPLES - 1)
            pipe.time()
        replies = await pipe.execute()
        stats = None
        if with_stats:
            throughput, wait, run, (now_s, _) = replies[1:]
            stats = _queue_stats(throughput, wait, run, now_s * 1000)
        record = QueueRecord.from_hash(name, replies[0], self.policy.default_concurrency, stats)
        return record.share(share) if tenant else record

    async def list_queues(self, *, tenant: str = "") -> list[QueueRecord]:
        """Every queue; with `tenant`, that tenant's shares of the queues it has one in."""
        names = [n.decode() for n in await self.client.zrange(self.keys.queues, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue(name))
            if tenant:
                pipe.hgetall(self.keys.queue_tenant(name, tenant))
        replies = await pipe.execute()
        if not tenant:
            return [QueueRecord.from_hash(n, h, self.policy.default_concurrency)
                    for n, h in zip(names, replies, strict=True)]
        return [
            QueueRecord.from_hash(n, h, self.policy.default_concurrency).share(share)
            for n, h, share in zip(names, replies[::2], replies[1::2], strict=True) if share
        ]

    async def update_queue(self, name: str, fields: Mapping[str, int], *, tenant: str = "") -> QueueRecord:
        """Set `fields` among paused / concurrency / host_rate_limit (the queue is created
        on first use); with `tenant`, that tenant's paused / concurrency in the queue."""
        flat: list[Any] = []
        for key, value in fields.items():
            flat += [key, int(value)]
        queue, share = await self._run("queue_update", name, tenant, *flat)
        record = QueueRecord.from_hash(name, _pairs(queue), self.policy.default_concurrency, None)
        return record.share(_pairs(share)) if tenant else record

    async def clean_queue(
        self, name: str, state: State, ended_before_ms: int, limit: int, *, tenant: str = ""
    ) -> int:
        """Delete finished jobs of a queue (of every tenant, or of `tenant`)."""
        try:
            return int(await self._run("clean", name, state.value, ended_before_ms, limit, tenant))
        except ResponseError as exc:
            raise refused(exc, Context(action="clean")) from None

    async def retry_failed(
        self, name: str, limit: int, *, priority: int = 0, max_attempts: int = 0, by: str = "", tenant: str = ""
    ) -> int:
        """Retry a queue's FAILED jobs (of every tenant, or of `tenant`), at `priority`
        and with `max_attempts` in their fresh set when given (0: each job's own),
        asked by the API key `by`."""
        return int(await self._run("retry_failed", name, limit, priority, max_attempts, by, tenant))

    # ---- kinds ------------------------------------------------------------------------

    async def publish_kinds(self, specs: Sequence[KindSpec]) -> None:
        """An executor's kinds, for the gateways to validate jobs against (kept: a kind
        once published stays known while no executor serves it)."""
        if specs:
            await self.client.hset(self.keys.kinds, mapping={spec.name: spec.to_json() for spec in specs})

    async def published_kinds(self) -> dict[str, KindSpec]:
        published = await self.client.hgetall(self.keys.kinds)
        return {name.decode(): KindSpec.from_json(raw) for name, raw in published.items()}

    async def take_deleted(self, count: int = 100) -> list[str]:
        """Ids of deleted jobs whose artifacts are still to be removed."""
        ids = await self.client.lpop(self.keys.deleted, count)
        return [i.decode() for i in ids or []]

    async def now_ms(self) -> int:
        now_s, now_us = await self.client.time()
        return int(now_s * 1000 + now_us // 1000)

    # ---- client actions -------------------------------------------------------------

    async def cancel(self, job_id: str, error: bytes) -> State:
        try:
            return State((await self._run("cancel", job_id, error, *self.policy.args())).decode())
        except ResponseError as exc:
            raise refused(exc, Context(action="cancel")) from None

    async def retry(self, job_id: str, *, by: str = "") -> tuple[State, int]:
        """Retry a FAILED or CANCELLED job, asked by the API key `by` (its event says so)."""
        try:
            state, position = await self._run("retry", job_id, by)
        except ResponseError as exc:
            raise refused(exc, Context(action="retry")) from None
        return State(state.decode()), int(position)

    # ---- admission ------------------------------------------------------------------

    async def dispatch(self, max_jobs: int | None = None) -> list[Handover]:
        """Hand waiting jobs to the executors' free slots: each becomes a Dramatiq
        message in the same atomic step (admit() in lua/includes/admission.lua)."""
        flat = await self._run("dispatch", *self.policy.args(max_jobs))
        return [Handover(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def promote_due(self, max_jobs: int = 1000) -> int:
        return int(await self._run("promote", max_jobs))

    async def reap(self, lost_error: bytes, max_jobs: int = 1000) -> tuple[int, int]:
        """Recover what dead executors left: jobs past their hand-over or stall deadline
        (requeued or failed; the counts are returned), and the deliveries of transport
        workers whose Dramatiq heartbeat went stale (back to the queue)."""
        requeued, failed = await self._run(
            "reap", max_jobs, lost_error, self.policy.worker_timeout_ms, *self.policy.args()
        )
        return int(requeued), int(failed)

    # ---- executor side ----------------------------------------------------------------

    async def take(self, count: int, worker_id: str, stall_timeout_ms: int, queues: Sequence[str]) -> Taken:
        """Up to `count` messages off the Dramatiq `queues` (in that order) for the
        executor worker `worker_id`, their jobs claimed by it. Stale and duplicate
        deliveries are acknowledged in the script and left out (but counted as popped)."""
        flat = await self._run("take", count, worker_id, stall_timeout_ms, *self.policy.args(), *queues)
        return self._taken(flat, worker_id)

    async def take_when_woken(
        self, wake: aioredis.Redis, wake_keys: Sequence[str], block_seconds: float, count: int, worker_id: str,
        stall_timeout_ms: int, queues: Sequence[str],
    ) -> Taken:
        """Block on the wake lists `wake_keys` (up to `block_seconds`), then take(): both
        written at once on `wake` (a client of the caller's alone: the block holds up its
        connection), so that Redis runs the take right after a wake token pops (or the
        block times out), with no round trip in between."""
        args = [self.prefix, count, worker_id, stall_timeout_ms, *self.policy.args(), *queues]
        take = self._library.fcall("take", args)
        multiplexed: MultiplexedConnection | None = getattr(wake, "multiplexed", None)
        if multiplexed is not None:
            # No reply long after the block's end: the connection is dead. Dropped, its
            # commands go again on a new one (as for any connection found dead).
            _, flat = await multiplexed.execute_many(
                [("BLPOP", *wake_keys, block_seconds), take],
                within=block_seconds + BLOCK_GRACE_SECONDS)
        else:
            pipe = wake.pipeline(transaction=False)
            pipe.blpop(list(wake_keys), timeout=block_seconds)
            pipe.execute_command(*take)
            _, flat = await pipe.execute(raise_on_error=False)
        if is_missing(flat):  # Redis lost its scripts (restarted, failed over)
            return await self.take(count, worker_id, stall_timeout_ms, queues)
        if isinstance(flat, Exception):
            raise flat
        return self._taken(flat, worker_id)

    @staticmethod
    def _taken(flat: list[Any], worker_id: str) -> Taken:
        """take.lua's reply (also the second half of finish.lua's)."""
        messages: list[TakenMessage] = []
        for i in range(1, len(flat), TAKE_STRIDE):
            data, message_id, queue, ok = flat[i], flat[i + 1].decode(), flat[i + 2].decode(), int(flat[i + 3])
            claim = None
            if ok == 1:
                job_id, attempt, _ = message_id.rsplit("-", 2)
                claim = Claim.from_reply(
                    job_id, int(attempt), flat[i + 3:i + TAKE_STRIDE], Delivery(worker_id, message_id, queue)
                )
            messages.append(TakenMessage(data, message_id, claim, queue))
        return Taken(int(flat[0]), messages)

    async def ack(self, worker_id: str, message_id: str, queue: str) -> None:
        """Acknowledge a delivery taken off `queue` that no finish acknowledged (see ack.lua)."""
        await self._run("ack", worker_id, message_id, queue, *self.policy.args())

    async def claim(self, job_id: str, attempt: int, executor_id: str, stall_timeout_ms: int) -> Claim | str:
        """The claim, or the reason there is none (a duplicate or stale delivery)."""
        reply = await self._run("claim", job_id, attempt, executor_id, stall_timeout_ms)
        if int(reply[0]) != 1:
            return str(reply[1].decode())
        return Claim.from_reply(job_id, attempt, reply)

    async def heartbeat(
        self,
        executor_id: str,
        slots: int,
        ttl_ms: int,
        stall_timeout_ms: int,
        info: dict[str, Any],
        running: Sequence[tuple[str, int]],
        kinds: Sequence[str] = (),
    ) -> list[str]:
        """Register the executor and keep its running jobs alive; returns the job ids
        it should stop (cancel asked, or no longer its own)."""
        flat: list[Any] = []
        for job_id, attempt in running:
            flat += [job_id, attempt]
        reply = await self._run(
            "heartbeat", executor_id, slots, ttl_ms, stall_timeout_ms, json.dumps(info),
            self.policy.transport_namespace, json.dumps(sorted(kinds)), *flat,
        )
        return [r.decode() for r in reply]

    async def report_progress(
        self, job_id: str, attempt: int, progress: int, message: str, step_index: int = -1, step_name: str = ""
    ) -> bool:
        return bool(await self._run("progress", job_id, attempt, progress, message, step_index, step_name))

    # The attempt's end. With the claim's `delivery`, its transport message is
    # acknowledged in the same script; the freed slot is refilled there too.

    async def finish_many(self, finishes: Sequence[Finish]) -> list[State | None]:
        """End several running attempts in one script (each as if alone); per attempt,
        the job's new state, or None when that attempt no longer runs."""
        states, _ = await self.finish_and_take(finishes)
        return states

    async def finish_and_take(
        self, finishes: Sequence[Finish], count: int = 0, worker_id: str = "", stall_timeout_ms: int = 0,
        queues: Sequence[str] = (),
    ) -> tuple[list[State | None], Taken]:
        """finish_many, then, in the same script, take(count, worker_id, stall_timeout_ms,
        queues) for the slots the attempts free (count 0: nothing is taken)."""
        flat: list[Any] = [count, worker_id, stall_timeout_ms, len(queues), *queues]
        for finish in finishes:
            flat += finish.args()
        states, taken = await self._run("finish", *self.policy.args(), *flat)
        return [State(r.decode()) if r else None for r in states], self._taken(taken, worker_id)

    async def complete(
        self, job_id: str, attempt: int, result: bytes, *, delivery: Delivery | None = None
    ) -> State | None:
        return (await self.finish_many([Finish(job_id, attempt, "completed", result, None, delivery)]))[0]

    async def fail(
        self, job_id: str, attempt: int, error: bytes, retry_in_ms: int | None = None,
        *, delivery: Delivery | None = None,
    ) -> State | None:
        """The attempt failed; with `retry_in_ms`, the job is DELAYED that long (on
        Redis's clock) while attempts remain, else FAILED."""
        return (await self.finish_many([Finish(job_id, attempt, "failed", error, retry_in_ms, delivery)]))[0]

    async def mark_cancelled(
        self, job_id: str, attempt: int, error: bytes, *, delivery: Delivery | None = None
    ) -> State | None:
        return (await self.finish_many([Finish(job_id, attempt, "cancelled", error, None, delivery)]))[0]

    async def live_executors(self) -> list[ExecutorRecord]:
        now_ms = await self.now_ms()
        ids = [i.decode() for i in await self.client.zrangebyscore(self.keys.executors, now_ms, "+inf")]
        pipe = self.client.pipeline(transaction=False)
        for executor_id in ids:
            pipe.hgetall(self.keys.executor(executor_id))
        return [ExecutorRecord.from_hash(i, h) for i, h in zip(ids, await pipe.execute(), strict=True) if h]

    # ---- queue statistics beyond the counts (conveyor/queue_stats.py) -----------------

    async def queue_insights(self, names: Sequence[str], head: int = HEAD_JOBS) -> list[Insights]:
        """Per queue: its totals since its first job, its per-minute counts and noted
        backlog, the kinds and oldest ready time of the first `head` waiting jobs, and
        the live executors' slots (in all and per kind). Two pipelined round trips of a
        bounded number of small reads per queue, whatever the number of jobs."""
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.get(self.keys.capacity)
        pipe.hgetall(self.keys.kind_capacity)
        for name in names:
            pipe.hmget(self.keys.queue(name), "ended:COMPLETED", "ended:FAILED", "ended:CANCELLED")
            pipe.hgetall(self.keys.queue_index(name, "throughput"))
            pipe.zrange(self.keys.queue_index(name, "waiting"), 0, head - 1)
        replies = await pipe.execute()
        (now_s, now_us), capacity, kind_capacity = replies[:3]
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        per_queue = [replies[3 + 3 * i: 6 + 3 * i] for i in range(len(names))]
        pipe = self.client.pipeline(transaction=False)
        for _, _, ids in per_queue:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id.decode()), "kind", "ready")
        heads = iter(await pipe.execute())
        kinds = {k.decode(): _int(v) for k, v in kind_capacity.items()}
        minute = now_ms // 60000
        out: list[Insights] = []
        for totals, throughput, ids in per_queue:
            head_kinds: dict[str, int] = {}
            oldest = 0
            for _ in ids:
                kind, ready = next(heads)
                if kind:
                    head_kinds[kind.decode()] = head_kinds.get(kind.decode(), 0) + 1
                if ready and (not oldest or _int(ready) < oldest):
                    oldest = _int(ready)

            def per_minute(prefix: bytes, counts: dict[bytes, bytes] = throughput) -> tuple[int, ...]:
                return tuple(_int(counts.get(b"%s:%d" % (prefix, m))) for m in range(minute - 59, minute + 1))

            waiting_at = {
                int(k[2:]): _int(v) for k, v in throughput.items() if k.startswith(b"w:") and k[2:].isdigit()
            }
            out.append(Insights(
                now_ms=now_ms,
                totals={s: _int(v) for s, v in zip(("COMPLETED", "FAILED", "CANCELLED"), totals, strict=True)},
                completed_per_minute=per_minute(b"c"), failed_per_minute=per_minute(b"f"),
                cancelled_per_minute=per_minute(b"x"), waiting_at=waiting_at, head_kinds=head_kinds,
                oldest_ready_ms=oldest, capacity=_int(capacity), kind_capacity=kinds,
            ))
        return out

    async def queue_histograms(self, names: Sequence[str]) -> list[dict[str, int]]:
        """Per queue, its wait and run time histograms: '<w|r>:<bucket>' counts (bucket
        1 to len(HISTOGRAM_BOUNDS_MS) + 1) and '<w|r>:sum' ms. The store keeps each as
        BITFIELD's i64 slots (lua/includes/stats.lua); the hash that versions before
        kept them in is added in, so the counts carry over an upgrade."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(self.keys.queue_index(name, "wait-hist"))
            pipe.get(self.keys.queue_index(name, "run-hist"))
            pipe.hgetall(self.keys.queue_index(name, "hist"))
        replies = await pipe.execute()
        out: list[dict[str, int]] = []
        for i in range(0, len(replies), 3):
            wait, run, before = replies[i:i + 3]
            hist = {k.decode(): _int(v) for k, v in before.items()}
            for letter, packed in (("w", wait), ("r", run)):
                for slot, value in enumerate(_i64_slots(packed or b"")):
                    field = f"{letter}:sum" if slot == 0 else f"{letter}:{slot}"
                    hist[field] = hist.get(field, 0) + value
            out.append(hist)
        return out


def _i64_slots(packed: bytes) -> list[int]:
    """BITFIELD's i64 slots of a string, #0 first (big-endian; a short last slot is
    padded with zero bits, as BITFIELD reads it)."""
    padded = packed + b"\0" * (-len(packed) % 8)
    return [int.from_bytes(padded[i:i + 8], "big", signed=True) for i in range(0, len(padded), 8)]


def _queue_stats(throughput: dict[bytes, bytes], wait: list[bytes], run: list[bytes], now_ms: int) -> QueueStats:
    """The last 60 minutes of the per-minute counters (oldest first), and the samples."""
    minute = now_ms // 60000
    minutes = range(minute - 59, minute + 1)
    completed = [int(throughput.get(b"c:%d" % m, 0)) for m in minutes]
    failed = [int(throughput.get(b"f:%d" % m, 0)) for m in minutes]
    return QueueStats(tuple(completed), tuple(failed), tuple(int(w) for w in wait), tuple(int(r) for r in run))
