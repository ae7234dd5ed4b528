"""JobService: validate, call the domain, answer. Errors are raised as domain
errors and mapped to statuses by gateway.errors.ErrorInterceptor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from conveyor import tracing
from conveyor.errors import ConveyorError, FieldViolation, InvalidArgument, NotFound, Unavailable
from conveyor.kinds import KindSpec
from conveyor.kinds.api import KIND_NAME
from conveyor.statuses import cancelled_by
from conveyor.store.key_store import TENANT
from conveyor.store.records import EventRecord, JobRecord, NewJob
from conveyor.v1 import job_service_pb2 as pb
from conveyor.v1 import job_service_pb2_grpc
from gateway.auth import caller
from gateway.errors import to_status
from gateway.estimates import estimate_start_ms
from gateway.event_hub import HubClosed, follow
from gateway.mapping import (
    STATE_FROM_PROTO,
    duration_ms,
    event_to_proto,
    heartbeat_now,
    job_to_proto,
    new_job,
    submitted_to_proto,
)
from gateway.runtime import GatewayRuntime
from gateway.validation import (
    MAX_ARTIFACT_NAME,
    MAX_BATCH,
    MAX_SEQUENCE,
    MAX_VIOLATIONS,
    MAX_WAIT_S,
    WAIT_DEFAULT_S,
    capped,
    check_job_id,
    check_label_filter,
    check_page_token,
    check_queue,
    duration_problem,
    validate_submit,
)

CANCEL_CONFIRM_S = 3.0
#: Event messages kept for the other watchers of the same event (bounded).
EVENT_MESSAGES_KEPT = 8192
SHUTTING_DOWN = "the gateway is shutting down; reconnect with after_sequence"


def caller_owner(context: grpc.aio.ServicerContext) -> str:
    """The tenant of the caller (its API key's; `default` with auth off): what it
    makes is that tenant's."""
    return caller().tenant


def build_job(rt: GatewayRuntime, request: pb.SubmitJobRequest, owner: str, now_ms: int,
              kind: KindSpec | None, trace: str = "") -> NewJob:
    """A validated submit as the store's NewJob, with the server's defaults and its
    tenant's quotas and fair-share weight (for SubmitJob, SubmitJobs and SubmitSuite),
    and the trace context it was submitted in (conveyor/tracing.py)."""
    s = rt.settings
    return new_job(
        request,
        owner=owner,
        now_ms=now_ms,
        default_max_attempts=s.default_max_attempts,
        default_timeout_ms=int(s.default_job_timeout_seconds * 1000),
        kind=kind,
        max_open=s.tenant_max_open_jobs,
        max_rate=s.tenant_max_submits_per_second,
        weight=s.tenant_weights.get(owner, 1),
        trace=trace,
    )


#: A live event's WatchJob message, built once for all its watchers: the hub hands
#: every watcher of a job the same EventRecord. Keyed by identity, holding the record
#: so that its id cannot be reused while kept. Nothing changes a message once built.
_event_messages: dict[int, tuple[EventRecord, pb.WatchJobResponse]] = {}


def event_message(event: EventRecord) -> pb.WatchJobResponse:
    kept = _event_messages.get(id(event))
    if kept is not None and kept[0] is event:
        return kept[1]
    if len(_event_messages) >= EVENT_MESSAGES_KEPT:
        _event_messages.clear()
    message = pb.WatchJobResponse(event=event_to_proto(event))
    _event_messages[id(event)] = (event, message)
    return message


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, rt: GatewayRuntime) -> None:
        self.rt = rt

    async def _owned(self, job_id: str) -> JobRecord:
        """The job, if it exists for the caller (its tenant's, or any for an admin)."""
        job = await self.rt.store.get(check_job_id(job_id))
        if not caller().may_see(job.owner):
            # Someone else's job is indistinguishable from a missing one.
            raise NotFound(f"job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})
        return job

    # ---- submit -----------------------------------------------------------------

    def _new_job(self, request: pb.SubmitJobRequest, owner: str, now_ms: int, kind: KindSpec | None,
                 trace: str = "") -> NewJob:
        return build_job(self.rt, request, owner, now_ms, kind, trace)

    async def _checked(
        self, request: pb.SubmitJobRequest, owner: str, prefix: str = ""
    ) -> tuple[KindSpec | None, list[FieldViolation]]:
        """What is wrong with a submit, field by field (the contract's bounds, then the
        jobs it depends on, then a `kind` task against its published kind), and the
        kind's spec for a `kind` task."""
        found = validate_submit(request, self.rt.limits, prefix) or await self._check_dependencies(
            request, owner, prefix
        )
        if found or request.WhichOneof("task") != "kind":
            return None, found
        return await self.rt.kinds.check(request.kind, f"{prefix}kind")

    async def _check_dependencies(
        self, request: pb.SubmitJobRequest, owner: str, prefix: str = ""
    ) -> list[FieldViolation]:
        """Each job named in depends_on exists and is the caller's."""
        if not request.depends_on:
            return []
        deps = await self.rt.store.get_many(list(request.depends_on))
        return [
            FieldViolation(f"{prefix}depends_on[{i}]", f"no job {dep_id!r}", reason="DEPENDENCY_NOT_FOUND")
            for i, (dep_id, dep) in enumerate(zip(request.depends_on, deps, strict=True))
            if dep is None or dep.owner != owner
        ]

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.SubmitJobResponse:
        owner = caller_owner(context)
        kind, violations = await self._checked(request, owner)
        if violations:
            raise InvalidArgument(violations)
        trace = tracing.job_trace(context)
        # admit: the submit script itself hands the job to a free slot (no admission round).
        # Concurrent submits share one connection, pipelined (conveyor/redis_multiplex.py).
        submitted = await self.rt.store.submit(
            self._new_job(request, owner, int(time.time() * 1000), kind, trace), admit=True)
        return submitted_to_proto(submitted)

    async def SubmitJobs(
        self, request: pb.SubmitJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitJobsResponse:
        if not request.requests:
            raise InvalidArgument(FieldViolation("requests", "at least one request is required"))
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument(FieldViolation("requests", f"at most {MAX_BATCH} requests per call"))
        owner = caller_owner(context)
        refused: dict[int, list[FieldViolation]] = {}
        kinds: dict[int, KindSpec | None] = {}
        for i, req in enumerate(request.requests):
            kinds[i], found = await self._checked(req, owner, f"requests[{i}].")
            if found:
                refused[i] = found
            if len(refused) >= MAX_VIOLATIONS and not request.allow_partial:
                break  # refused anyway, and no more could be shown
        if refused and not request.allow_partial:
            raise InvalidArgument(capped([v for found in refused.values() for v in found]))
        now_ms = int(time.time() * 1000)
        accepted = [i for i in range(len(request.requests)) if i not in refused]
        trace = tracing.job_trace(context)
        outcomes = await self.rt.store.submit_many(  # (made as taken: Redis creates the first while the next are made)
            (self._new_job(request.requests[i], owner, now_ms, kinds[i], trace) for i in accepted), admit=True
        )
        response = pb.SubmitJobsResponse(results=[pb.SubmitJobResponse() for _ in request.requests])
        for i, found in refused.items():
            response.errors.add(index=i, error=to_status(InvalidArgument(found)))
        for i, outcome in zip(accepted, outcomes, strict=True):
            if isinstance(outcome, ConveyorError):
                response.errors.add(index=i, error=to_status(outcome))
            else:
                response.results[i].CopyFrom(submitted_to_proto(outcome))
        response.errors.sort(key=lambda e: e.index)
        return response

    # ---- read ---------------------------------------------------------------------

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        job = await self._owned(request.id)
        eta = await estimate_start_ms(self.rt.store, job) if job.position else 0
        return pb.GetJobResponse(job=job_to_proto(job, estimated_start_ms=eta))

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        if request.page_size < 0:
            raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
        if request.queue:
            check_queue(request.queue)
        check_page_token(request.page_token)
        state = None
        if request.state:
            if request.state not in STATE_FROM_PROTO:
                raise InvalidArgument(FieldViolation("state", f"unknown state {request.state}"))
            state = STATE_FROM_PROTO[request.state]
        if request.kind and not KIND_NAME.match(request.kind):
            raise InvalidArgument(FieldViolation("kind", "a kind's name (lowercase letters, digits, '.', '_', '-')"))
        labels = check_label_filter(request.labels)
        if request.tenant and not TENANT.match(request.tenant):
            raise InvalidArgument(FieldViolation("tenant", "a tenant's name"))
        who = caller()
        owner = request.tenant if who.sees_every_tenant else who.tenant
        if not who.may_see(request.tenant or owner):
            return pb.ListJobsResponse()  # another tenant's jobs do not exist for the caller
        jobs, token = await self.rt.store.list_jobs(
            queue=request.queue, state=state, page_size=request.page_size, page_token=request.page_token,
            kind=request.kind, owner=owner, labels=labels,
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=token)

    # ---- follow -------------------------------------------------------------------

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobResponse]:
        check_job_id(request.id)
        if request.HasField("after_sequence") and not 0 <= request.after_sequence <= MAX_SEQUENCE:
            raise InvalidArgument(FieldViolation("after_sequence", f"between 0 and {MAX_SEQUENCE}"))
        job = await self._owned(request.id)
        yield pb.WatchJobResponse(job=job_to_proto(job))
        last = request.after_sequence if request.HasField("after_sequence") else job.last_sequence
        if job.state.terminal and last >= job.last_sequence:
            return
        hub = self.rt.hub
        try:
            # Subscribed before the replay reads the job's log: nothing falls in between.
            sub = await hub.subscribe_job(job.id, job.queue)
        except HubClosed:
            raise Unavailable(SHUTTING_DOWN, reason="GATEWAY_SHUTTING_DOWN") from None
        try:
            batches = follow(
                sub, last, sequence_of=lambda ev: ev.sequence, heartbeat=self.rt.settings.watch_heartbeat_seconds,
                replay=lambda after: self.rt.store.events_after(job.id, after),
            )
            async for batch in batches:
                if not batch:
                    yield pb.WatchJobResponse(heartbeat=heartbeat_now())
                for event in batch:
                    yield event_message(event)
                    if event.terminal:
                        return
        except HubClosed:
            raise Unavailable(SHUTTING_DOWN, reason="GATEWAY_SHUTTING_DOWN") from None
        finally:
            hub.unsubscribe(sub)

    async def _until_done(self, job: JobRecord, read_at: float, timeout: float) -> JobRecord:
        """The job (`job`, as read by a read sent at loop time `read_at`) once
        terminal, or as it is when `timeout` passes. Raises HubClosed when the gateway
        shuts down first."""
        if job.state.terminal:
            return job
        job_id = job.id
        sub = await self.rt.hub.subscribe_job(job_id, job.queue)
        try:
            if self.rt.hub.may_have_ended(sub, read_at):
                job = await self.rt.store.get(job_id)  # it may have ended before the subscription
            deadline = asyncio.get_running_loop().time() + timeout
            while not job.state.terminal:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                if any(ev.terminal for ev in await sub.wait(left)):
                    job = await self.rt.store.get(job_id)
            return job
        finally:
            self.rt.hub.unsubscribe(sub)

    async def WaitJob(self, request: pb.WaitJobRequest, context: grpc.aio.ServicerContext) -> pb.WaitJobResponse:
        timeout = WAIT_DEFAULT_S
        if request.HasField("timeout"):
            problem = duration_problem(request.timeout, int(MAX_WAIT_S * 1000))
            if problem:
                raise InvalidArgument(FieldViolation("timeout", problem))
            timeout = duration_ms(request.timeout) / 1000
        read_at = asyncio.get_running_loop().time()
        job = await self._owned(request.id)
        try:
            job = await self._until_done(job, read_at, timeout)
        except HubClosed:
            # Not a timeout: the job may still end; the caller asks again elsewhere.
            raise Unavailable("the gateway is shutting down; wait again", reason="GATEWAY_SHUTTING_DOWN") from None
        return pb.WaitJobResponse(job=job_to_proto(job), done=job.state.terminal)

    # ---- act ----------------------------------------------------------------------

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.CancelJobResponse:
        read_at = asyncio.get_running_loop().time()
        job = await self._owned(request.id)
        await self.rt.store.cancel(request.id, cancelled_by(caller().key_id))
        # An active job is stopped by its executor; give it a moment to confirm. The
        # cancel is recorded either way: at shutdown the job is answered as it is.
        try:
            job = await self._until_done(job, read_at, CANCEL_CONFIRM_S)
        except HubClosed:
            job = await self.rt.store.get(job.id)
        return pb.CancelJobResponse(job=job_to_proto(job))

    async def RetryJob(self, request: pb.RetryJobRequest, context: grpc.aio.ServicerContext) -> pb.RetryJobResponse:
        await self._owned(request.id)
        await self.rt.store.retry(request.id, by=caller().key_id)
        self.rt.admission.wake()
        return pb.RetryJobResponse(job=job_to_proto(await self.rt.store.get(request.id)))

    async def GetArtifact(
        self, request: pb.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetArtifactResponse]:
        check_job_id(request.job_id, "job_id")
        if not request.name or len(request.name) > MAX_ARTIFACT_NAME:
            raise InvalidArgument(FieldViolation(
                "name", f"an artifact name from result.artifacts is required (at most {MAX_ARTIFACT_NAME} characters)"))
        await self._owned(request.job_id)
        artifacts = self.rt.artifacts
        size, content_type = await artifacts.stat(request.job_id, request.name)
        first = True
        async for chunk in artifacts.iter_chunks(request.job_id, request.name):
            if first:
                yield pb.GetArtifactResponse(data=chunk, content_type=content_type, size_bytes=size)
                first = False
            else:
                yield pb.GetArtifactResponse(data=chunk)
        if first:
            yield pb.GetArtifactResponse(content_type=content_type, size_bytes=size)
