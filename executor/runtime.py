"""What one executor worker process runs on its event loop: claim a handed-over job,
run its task, report progress, finish it (or retry it) — and the heartbeat and
cancel listener that keep running jobs alive and stoppable.

Delivery is at least once: claim.lua lets exactly one delivery of an attempt run;
every other (duplicate, stale, cancelled) claims nothing and is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from google.rpc import code_pb2
from redis.exceptions import RedisError

from conveyor import tracing
from conveyor.artifacts import ArtifactStore, open_artifact_store
from conveyor.kinds import JobError, Kind, KindSpec, load_kinds
from conveyor.settings import Settings
from conveyor.statuses import CANCELLED_BY_CLIENT
from conveyor.store.job_store import JobStore, connect
from conveyor.store.records import Claim, Finish, State
from conveyor.transport import store_policy
from conveyor.v1 import job_pb2, job_service_pb2
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskRunner
from executor.browser.url_policy import UrlPolicy
from executor.finish_batcher import FinishBatcher, Taker
from executor.kind_context import ExecutorJobContext, ExecutorServices
from executor.kind_runner import run_kind
from executor.progress import ProgressSender
from executor.retry_policy import RetryPolicy

log = structlog.get_logger("executor")

HEARTBEAT_SECONDS = 1.0


@dataclass(slots=True)
class RunningJob:
    job_id: str
    attempt: int
    #: The task running the attempt: cancelled to stop it while its handler runs.
    task: asyncio.Task[Any]
    progress: ProgressSender
    stop_reason: str = ""
    #: True while the handler runs (a stop then cancels `task`); the attempt's end,
    #: once under way, is not interrupted.
    executing: bool = True


class ExecutorRuntime:
    def __init__(self, settings: Settings, *, worker_index: int = 0) -> None:
        self.settings = settings
        self.worker_index = worker_index
        self.executor_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.slots = settings.executor_slots
        self.policy = RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds)
        #: The kinds this worker serves, by name (the built-ins, CONVEYOR_KINDS and
        #: the entry points; all of them, or those of CONVEYOR_EXECUTOR_KINDS).
        self.kinds: dict[str, Kind] = {
            k.name: k for k in load_kinds(settings.kinds).serving(settings.executor_kinds)
        }
        self.running: dict[str, RunningJob] = {}
        #: The message ids of deliveries the store acknowledged as it finished their
        #: jobs (the consumer acknowledges the others itself).
        self.acked_by_store: set[str] = set()
        self.stall_ms = int(settings.stall_timeout_seconds * 1000)
        self._tasks: list[asyncio.Task[None]] = []
        self._store: JobStore | None = None
        self._pool: BrowserPool | None = None
        self._artifacts: ArtifactStore | None = None
        self._services: ExecutorServices | None = None
        self._finishes: FinishBatcher | None = None
        #: The job log of each kind (bound once, not once per job).
        self._kind_logs: dict[str, Any] = {}
        #: The logger of the per-job lines: bound at start (logging is configured by
        #: then), not the module's lazy proxy, which costs each call a lookup.
        self._job_log: Any = log
        self.completed = 0

    @property
    def store(self) -> JobStore:
        assert self._store is not None, "runtime not started"
        return self._store

    def take_with_finishes(self, taker: Taker) -> None:
        """Finish batches take the next messages for the slots they free, for `taker`
        (the worker's consumer; see executor/finish_batcher.py)."""
        assert self._finishes is not None, "runtime not started"
        self._finishes.taker = taker

    # ---- life ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._job_log = log.bind()
        client = connect(s.effective_redis_url, max_connections=max(8, self.slots * 2), client_name="conveyor-executor")
        self._store = JobStore(client, s.key_prefix, store_policy(s))
        self._finishes = FinishBatcher(self._store)
        await self.store.client.ping()
        await self.store.load_scripts()
        artifacts = self._artifacts = open_artifact_store(s)  # a directory, or S3
        self._services = ExecutorServices(artifacts, UrlPolicy(s.allowed_hosts), s.max_artifact_bytes)
        if any(kind.browser for kind in self.kinds.values()):
            # Shared by every worker on the host: each browser dir names its creator, and
            # only dirs whose creator is gone are swept as leftovers.
            self._pool = BrowserPool(s, run_dir=Path(s.data_dir) / "browsers")
            await self._pool.start()
            self._services.pool = self._pool
            self._services.browser_runner = BrowserTaskRunner(self._pool, artifacts, s)
        await self.store.publish_kinds([KindSpec.of(kind) for kind in self.kinds.values()])
        await self._heartbeat_once()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cancel_listener(), name="cancel-listener"),
        ]
        log.info("executor worker ready", executor_id=self.executor_id, slots=self.slots,
                 kinds=sorted(self.kinds), browsers=self._pool is not None)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pool is not None:
            await self._pool.close()
        if self._artifacts is not None:
            await self._artifacts.close()
        if self._store is not None:
            # Unregister so admission stops counting these slots at once (the next
            # heartbeat or reap recounts every executor's slots anyway).
            with contextlib.suppress(RedisError, OSError):
                if await self.store.client.zrem(self.store.keys.executors, self.executor_id):
                    await self.store.client.decrby(self.store.keys.capacity, self.slots)
            await self.store.client.aclose()
        log.info("executor worker stopped", executor_id=self.executor_id)

    # ---- one job --------------------------------------------------------------------

    async def run(self, job_id: str, attempt: int) -> None:
        """The actor body, for a message the take did not claim a job for: claim attempt
        `attempt` of `job_id` and run it, if it is still ours to run."""
        claim = await self.store.claim(job_id, attempt, self.executor_id, self.stall_ms)
        if isinstance(claim, str):
            log.info("delivery skipped", job_id=job_id, attempt=attempt, reason=claim)
            return
        with (structlog.contextvars.bound_contextvars(job_id=job_id, attempt=attempt, queue=claim.queue),
              tracing.attempt(claim)):  # its span, when tracing is on
            await self._run_claimed(claim)

    async def run_taken(self, claim: Claim) -> None:
        """Run a job claimed as its message was taken (the consumer's take, or a finish
        batch's), in the consumer's task of its own for that message: the job's log
        context is bound in that task's context, which ends with it (no unbinding)."""
        structlog.contextvars.bind_contextvars(job_id=claim.job_id, attempt=claim.attempt, queue=claim.queue)
        if not tracing.enabled():
            await self._run_claimed(claim)
            return
        with tracing.attempt(claim):  # its span
            await self._run_claimed(claim)

    async def _run_claimed(self, claim: Claim) -> None:
        spec = job_service_pb2.SubmitJobRequest.FromString(claim.spec)
        progress = ProgressSender(self.store, claim.job_id, claim.attempt)
        task = asyncio.current_task()
        assert task is not None, "runs in a task"
        running = RunningJob(claim.job_id, claim.attempt, task, progress)
        self.running[claim.job_id] = running
        self._job_log.info("job started", kind=claim.kind)
        try:
            try:
                # The handler runs in this task: a stop (stop_job) or the time limit
                # cancels it there; neither reaches the attempt's end below.
                async with asyncio.timeout(claim.timeout_ms / 1000):
                    result = await self._execute(claim, spec, progress)
            finally:
                running.executing = False
        except TimeoutError:
            await self._failed(claim, JobError(
                f"the job ran longer than its time limit of {claim.timeout_ms / 1000:g}s",
                code=code_pb2.DEADLINE_EXCEEDED, reason="JOB_TIMEOUT", retryable=True,
            ), spec)
        except asyncio.CancelledError:
            # A stop's cancel is this attempt's own: taken back (the task goes on to end
            # the attempt). Any other cancel (the worker itself is being stopped) stands.
            if not running.stop_reason or task.uncancel() > 0:
                raise
            await self._stopped(claim, running.stop_reason)
        except JobError as err:
            await self._failed(claim, err, spec)
        except Exception as exc:
            log.exception("job crashed")
            await self._failed(claim, JobError(
                f"internal error: {type(exc).__name__}: {exc}", code=code_pb2.INTERNAL,
                reason="EXECUTOR_ERROR", retryable=True,
            ), spec)
        else:
            state = await self._finish(claim, "completed", result.SerializeToString())
            if tracing.enabled():
                tracing.outcome("completed")
            self.completed += 1
            self._job_log.info("job completed", state=state and state.value)
        finally:
            progress.close()
            # Only this attempt's entry: the job's next attempt may already run here
            # (a retry claimed while this one's finish was on its way).
            if self.running.get(claim.job_id) is running:
                del self.running[claim.job_id]

    async def _execute(
        self, claim: Claim, spec: job_service_pb2.SubmitJobRequest, progress: ProgressSender
    ) -> job_pb2.JobResult:
        kind = self.kinds.get(claim.kind)
        if kind is None:
            raise JobError(f"this executor does not serve kind {claim.kind!r}", code=code_pb2.FAILED_PRECONDITION,
                           reason="KIND_NOT_SERVED", retryable=True)
        assert self._services is not None, "runtime not started"
        kind_log = self._kind_logs.get(kind.name)
        if kind_log is None:
            kind_log = self._kind_logs[kind.name] = log.bind(kind=kind.name)
        ctx = ExecutorJobContext(
            job_id=claim.job_id, attempt=claim.attempt, queue=claim.queue, labels=dict(spec.labels), kind=kind,
            services=self._services, report=progress.report, log=kind_log,
        )
        return await run_kind(kind, ctx, spec)

    async def _failed(self, claim: Claim, err: JobError, spec: job_service_pb2.SubmitJobRequest) -> None:
        policy = self.policy.for_job(self.kinds.get(claim.kind), spec)
        retry_in = policy.retry_delay_ms(err, claim.attempt, claim.attempt_limit)
        state = await self._finish(claim, "failed", err.to_status().SerializeToString(), retry_in)
        tracing.outcome("failed" if state is None or state.terminal else "retrying", err.reason, err.message)
        log.warning("job attempt failed", reason=err.reason, error=err.message, retryable=err.retryable,
                    state=state and state.value, retry_in_ms=retry_in)

    async def _stopped(self, claim: Claim, reason: str) -> None:
        if reason == "cancel":
            state = await self._finish(claim, "cancelled", CANCELLED_BY_CLIENT)
            tracing.outcome("cancelled")
            log.info("job cancelled", state=state and state.value)
        else:
            log.warning("job stopped: no longer ours", reason=reason)

    async def _finish(self, claim: Claim, outcome: str, payload: bytes, retry_in_ms: int | None = None) -> State | None:
        """End the attempt in the store, which acknowledges the claim's delivery in the
        same script (the consumer then leaves it be)."""
        assert self._finishes is not None, "runtime not started"
        running = self.running.get(claim.job_id)
        if running is not None and running.attempt == claim.attempt:
            await running.progress.drain()  # its progress events come before its end
        state = await self._finishes.finish(
            Finish(claim.job_id, claim.attempt, outcome, payload, retry_in_ms, claim.delivery)
        )
        if claim.delivery is not None:
            self.acked_by_store.add(claim.delivery.message_id)
        return state

    def stop_job(self, job_id: str, reason: str) -> None:
        running = self.running.get(job_id)
        if running is not None and running.executing and not running.stop_reason:
            running.stop_reason = reason
            running.task.cancel()
            log.info("stopping job", job_id=job_id, reason=reason)

    # ---- liveness and cancel ----------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "worker": self.worker_index,
                                "completed": self.completed}
        sent = dict(self.running)
        running = [(r.job_id, r.attempt) for r in sent.values()]
        stop = await self.store.heartbeat(
            self.executor_id, self.slots, int(self.settings.executor_ttl_seconds * 1000),
            self.stall_ms, info, running, kinds=list(self.kinds),
        )
        for job_id, job in zip(stop, await self.store.get_many(stop), strict=True):
            # The verdict is on the attempt reported; a newer attempt of the same job
            # started since is not stopped by it.
            if self.running.get(job_id) is sent.get(job_id):
                self.stop_job(job_id, "cancel" if job is not None and job.cancel_requested else "lost")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._heartbeat_once()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed", error=str(exc))

    async def _cancel_listener(self) -> None:
        """Cancels reach the executor running the job at once through pub/sub (the
        heartbeat also sees the cancel flag, within a second, if a message is missed)."""
        while True:
            pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.keys.cancel_channel)
                async for message in pubsub.listen():
                    job_id = message["data"].decode()
                    if job_id in self.running:
                        self.stop_job(job_id, "cancel")
            except (RedisError, OSError) as exc:
                log.warning("cancel listener lost redis; resubscribing", error=str(exc))
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
