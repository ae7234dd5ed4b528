"""QueueService: queue counts, statistics and controls, answered from counters and
bounded samples (never by scanning jobs); the live executors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import structlog

from conveyor.errors import FieldViolation, InvalidArgument, PermissionDenied, Unavailable
from conveyor.queue_stats import assess, thresholds_of, with_counts
from conveyor.store.job_store import JobStore
from conveyor.store.records import EventRecord, QueueRecord
from conveyor.v1 import job_pb2, queue_service_pb2_grpc
from conveyor.v1 import queue_service_pb2 as pb
from gateway.auth import Caller, caller
from gateway.event_hub import HubClosed, follow
from gateway.mapping import (
    STATE_FROM_PROTO,
    duration_ms,
    event_to_proto,
    heartbeat_now,
    queue_to_proto,
    worker_to_proto,
)
from gateway.runtime import GatewayRuntime
from gateway.validation import (
    MAX_ATTEMPTS,
    MAX_BULK,
    MAX_CONCURRENCY,
    MAX_HOST_RATE_LIMIT,
    MAX_OLDER_THAN_MS,
    MAX_QUEUE_PAGE,
    MAX_WATCH_BATCH,
    check_page_token,
    check_queue,
    duration_problem,
)

log = structlog.get_logger("gateway.queues")


class TenantFilter:
    """A queue's events as a caller may see them: only its tenant's jobs' (all of
    them for an admin). Each job's tenant is read once per stream."""

    def __init__(self, store: JobStore, who: Caller) -> None:
        self._store = store
        self._who = who
        self._owners: dict[str, str | None] = {}

    async def events(self, batch: list[EventRecord]) -> list[EventRecord]:
        if self._who.sees_every_tenant:
            return batch
        unknown = list({ev.job_id for ev in batch} - self._owners.keys())
        if unknown:
            if len(self._owners) > 100_000:
                self._owners.clear()
            self._owners.update(zip(unknown, await self._store.owners(unknown), strict=True))
        return [ev for ev in batch if (owner := self._owners.get(ev.job_id)) is not None and self._who.may_see(owner)]


def _check_queue(name: str) -> str:
    return check_queue(name)


def _share() -> str:
    """Whose share of a queue the caller sees and administers: '' (the whole queue)
    for an admin, its own tenant's otherwise. A tenant sees its own jobs' counts and
    the queue's wait and run times; pausing, resuming, a concurrency, cleaning and
    retrying act on its own jobs. The totals, rates and health verdict count every
    tenant's jobs: they are the admin's view."""
    who = caller()
    return "" if who.sees_every_tenant else who.tenant


def _bulk_limit(limit: int) -> int:
    if not 0 <= limit <= MAX_BULK:
        raise InvalidArgument(FieldViolation("limit", f"between 1 and {MAX_BULK} (0 for {MAX_BULK})"))
    return limit or MAX_BULK


class QueueServicer(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, rt: GatewayRuntime) -> None:
        self.rt = rt

    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQueuesResponse:
        if request.page_size < 0:
            raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
        size = min(request.page_size or 100, MAX_QUEUE_PAGE)
        check_page_token(request.page_token)
        share = _share()
        queues = await self.rt.store.list_queues(tenant=share)
        names = [q.name for q in queues]
        start = 0
        if request.page_token:
            if request.page_token not in names:
                raise InvalidArgument(FieldViolation("page_token", "not a token this server issued"))
            start = names.index(request.page_token) + 1
        page = queues[start : start + size]
        token = page[-1].name if start + size < len(queues) and page else ""
        shown = [queue_to_proto(q) for q in page] if share else await self._assessed(page)
        return pb.ListQueuesResponse(queues=shown, next_page_token=token)

    async def GetQueue(self, request: pb.GetQueueRequest, context: grpc.aio.ServicerContext) -> pb.GetQueueResponse:
        share = _share()
        q = await self.rt.store.get_queue(_check_queue(request.queue), with_stats=True, tenant=share)
        if share:
            return pb.GetQueueResponse(queue=queue_to_proto(q))
        (out,) = await self._assessed([q])
        return pb.GetQueueResponse(queue=out)

    async def _assessed(self, records: list[QueueRecord]) -> list[pb.Queue]:
        """Queues with their summary statistics, health and issues (conveyor/queue_stats.py)."""
        insights = await self.rt.store.queue_insights([q.name for q in records])
        thresholds = thresholds_of(self.rt.settings)
        out = []
        for record, ins in zip(records, insights, strict=True):
            q = with_counts(record, ins)
            out.append(queue_to_proto(q, ins, assess(q, ins, thresholds)))
        return out

    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateQueueResponse:
        fields: dict[str, int] = {}
        if request.HasField("concurrency"):
            if not 0 <= request.concurrency <= MAX_CONCURRENCY:
                raise InvalidArgument(FieldViolation("concurrency", f"between 0 and {MAX_CONCURRENCY}"))
            fields["concurrency"] = request.concurrency
        if request.HasField("host_rate_limit"):
            if not 0 <= request.host_rate_limit <= MAX_HOST_RATE_LIMIT:
                raise InvalidArgument(FieldViolation("host_rate_limit", f"between 0 and {MAX_HOST_RATE_LIMIT}"))
            fields["host_rate_limit"] = request.host_rate_limit
        if not fields:
            raise InvalidArgument(FieldViolation("concurrency", "give concurrency and/or host_rate_limit"))
        share = _share()
        if share and "host_rate_limit" in fields:
            raise PermissionDenied("host_rate_limit is the queue's, for every tenant: an admin sets it",
                                   reason="ROLE_TOO_LOW", metadata={"field": "host_rate_limit"})
        q = await self.rt.store.update_queue(_check_queue(request.queue), fields, tenant=share)
        log.info("queue updated", queue=q.name, share=share or None, **fields)  # with the caller's key_id bound
        self.rt.admission.wake()
        return pb.UpdateQueueResponse(queue=queue_to_proto(q))

    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseQueueResponse:
        share = _share()
        q = await self.rt.store.update_queue(_check_queue(request.queue), {"paused": 1}, tenant=share)
        log.info("queue paused", queue=q.name, share=share or None)
        return pb.PauseQueueResponse(queue=queue_to_proto(q))

    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeQueueResponse:
        share = _share()
        q = await self.rt.store.update_queue(_check_queue(request.queue), {"paused": 0}, tenant=share)
        log.info("queue resumed", queue=q.name, share=share or None)
        self.rt.admission.wake()
        return pb.ResumeQueueResponse(queue=queue_to_proto(q))

    async def CleanQueue(
        self, request: pb.CleanQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.CleanQueueResponse:
        name = _check_queue(request.queue)
        state = STATE_FROM_PROTO.get(request.state)
        if state is None or not state.terminal:
            raise InvalidArgument(
                FieldViolation("state", "JOB_STATE_COMPLETED, JOB_STATE_FAILED or JOB_STATE_CANCELLED")
            )
        older = 0
        if request.HasField("older_than"):
            problem = duration_problem(request.older_than, MAX_OLDER_THAN_MS)
            if problem:
                raise InvalidArgument(FieldViolation("older_than", problem))
            older = duration_ms(request.older_than)
        share = _share()
        await self.rt.store.get_queue(name, tenant=share)  # NOT_FOUND for an unknown queue
        before = await self.rt.store.now_ms() - older
        deleted = await self.rt.store.clean_queue(name, state, before, _bulk_limit(request.limit), tenant=share)
        log.info("queue cleaned", queue=name, share=share or None, state=state.value, deleted=deleted)
        self.rt.janitor.wake()
        return pb.CleanQueueResponse(deleted=deleted)

    async def RetryFailedJobs(
        self, request: pb.RetryFailedJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryFailedJobsResponse:
        name = _check_queue(request.queue)
        if request.priority and request.priority not in job_pb2.Priority.values():
            raise InvalidArgument(FieldViolation("priority", f"unknown priority {request.priority}"))
        if not 0 <= request.max_attempts <= MAX_ATTEMPTS:
            raise InvalidArgument(FieldViolation("max_attempts", f"between 0 (each job's own) and {MAX_ATTEMPTS}"))
        share = _share()
        await self.rt.store.get_queue(name, tenant=share)
        retried = await self.rt.store.retry_failed(
            name, _bulk_limit(request.limit), priority=request.priority, max_attempts=request.max_attempts,
            by=caller().key_id, tenant=share,
        )
        self.rt.admission.wake()
        return pb.RetryFailedJobsResponse(retried=retried)

    async def WatchQueue(
        self, request: pb.WatchQueueRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchQueueResponse]:
        name = _check_queue(request.queue)
        if request.HasField("after_sequence") and request.after_sequence < 0:
            raise InvalidArgument(FieldViolation("after_sequence", "must not be negative"))
        if not 0 <= request.max_batch_size <= MAX_WATCH_BATCH:
            raise InvalidArgument(FieldViolation("max_batch_size", f"between 0 and {MAX_WATCH_BATCH}"))
        batch_size = max(1, request.max_batch_size)
        store, hub = self.rt.store, self.rt.hub
        try:
            sub = await hub.subscribe_queue(name)  # before reading, so nothing falls in between
        except HubClosed:
            raise Unavailable("the gateway is shutting down; reconnect with after_sequence",
                              reason="GATEWAY_SHUTTING_DOWN") from None
        try:
            # The headers tell the client the queue is followed from here on.
            await context.send_initial_metadata(())
            # A queue that has had no event yet is watched from its start (sequence 0).
            last = request.after_sequence if request.HasField("after_sequence") else await store.queue_sequence(name)
            batches = follow(
                sub, last, sequence_of=lambda ev: ev.queue_sequence,
                heartbeat=self.rt.settings.watch_heartbeat_seconds,
                replay=lambda after: store.queue_events_after(name, after),
            )
            mine = TenantFilter(store, caller())
            async for ready in batches:
                # Only other tenants' events: nothing of them shows, not even a message.
                batch = await mine.events(ready) if ready else ready
                if ready and not batch:
                    continue
                if not batch:
                    yield pb.WatchQueueResponse(heartbeat=heartbeat_now())
                elif request.max_batch_size <= 1:
                    for event in batch:
                        yield pb.WatchQueueResponse(event=event_to_proto(event))
                else:
                    for i in range(0, len(batch), batch_size):
                        chunk = [event_to_proto(event) for event in batch[i:i + batch_size]]
                        yield pb.WatchQueueResponse(events=pb.JobEventBatch(events=chunk))
        except HubClosed:
            raise Unavailable("the gateway is shutting down; reconnect with after_sequence",
                              reason="GATEWAY_SHUTTING_DOWN") from None
        finally:
            hub.unsubscribe(sub)

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkersResponse:
        workers = await self.rt.store.live_executors()
        return pb.ListWorkersResponse(workers=[worker_to_proto(w) for w in workers])
