"""The asyncio client (grpc.aio).

`sync.py`, the blocking client, is generated from this file by clients/python/unasync.py
(`async`/`await` dropped, grpc.aio calls turned into grpc's blocking ones): edit this
file, then run `python clients/python/unasync.py`. tests/test_sdk_lean.py fails when
the two differ."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from conveyor_client._common import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    MAX_WAIT_CHUNK,
    RECONNECT_CODES,
    UNSET,
    JobRequest,
    KindInput,
    RetryLike,
    call_metadata,
    channel_options,
    channel_target,
    clean_queue_request,
    duration,
    is_terminal,
    job_request,
    kinds_of,
    queue_events,
    retry_failed_request,
    to_state,
    to_submit_request,
    traced_metadata,
    update_queue_request,
    watch_queue_request,
)
from conveyor_client._schedules import Schedule, ScheduleRequest, schedule_stub, to_create_schedule_request
from conveyor_client._schedules import pb as schedule_pb
from conveyor_client.errors import ConveyorRpcError


class AsyncConveyorClient:
    """A Conveyor client for asyncio code.

    >>> async with AsyncConveyorClient("127.0.0.1:50051", api_key="...") as client:
    ...     submitted = await client.submit({"noop": {"sleep": "0.1s"}})
    ...     async for message in client.watch(submitted.id):
    ...         ...
    ...     job = await client.get(submitted.id)

    Failed calls raise `ConveyorRpcError` (code, message, reason, field violations).
    `timeout` is the default deadline of unary calls in seconds (None: no deadline);
    streams have no deadline.

    TLS: `tls=True` (a server certificate from a CA the system trusts), `ca_cert=`
    (a PEM bundle of your own CA; implies TLS), `client_cert=` and `client_key=` for a
    gateway that requires client certificates (mTLS), or a `grpcs://host:port` (or
    `https://`) target. `credentials=` takes gRPC channel credentials made elsewhere.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        options: list[tuple[str, Any]] | None = None,
        tls: bool | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        opts = channel_options(options)
        address, credentials = channel_target(
            target, credentials=credentials, tls=tls, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
        )
        #: Whether the channel is TLS.
        self.tls = credentials is not None
        self._channel = (
            grpc.aio.secure_channel(address, credentials, options=opts)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=opts)
        )
        self._metadata = call_metadata(api_key)
        self._jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._queues = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        self._schedules = schedule_stub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._keys = key_service_pb2_grpc.KeyServiceStub(self._channel)

    async def __aenter__(self) -> AsyncConveyorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # --- plumbing ----------------------------------------------------------------------
    async def _call(self, method: Any, request: Any, timeout: float | None = UNSET) -> Any:
        try:
            return await method(
                request,
                metadata=traced_metadata(self._metadata),
                timeout=self.timeout if timeout is UNSET else timeout,
            )
        except grpc.aio.AioRpcError as err:
            raise ConveyorRpcError.from_grpc(err) from err

    async def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        call = method(request, metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as err:
            raise ConveyorRpcError.from_grpc(err) from err
        finally:
            call.cancel()  # a no-op once the stream has ended; stops it if we left early

    # --- jobs --------------------------------------------------------------------------
    async def submit(
        self,
        request: JobRequest | None = None,
        *,
        kind: str | None = None,
        input: KindInput | None = None,
        retry: RetryLike | None = None,
        queue: str | None = None,
        priority: str | int | None = None,
        max_attempts: int | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = UNSET,
    ) -> job_service_pb2.SubmitJobResponse:
        """Submit one job: a SubmitJobRequest, or a dict in the protobuf JSON mapping
        such as `{"noop": {"sleep": "0.2s"}, "priority": "PRIORITY_HIGH"}`; or a job
        of any kind the executors serve, by name, with its input:

            await client.submit(kind="chat", input={"messages": [...]}, queue="agents")

        `input` is a dict or a pydantic model; `retry` overrides the kind's retry
        policy for this job (`{"backoff": "fixed", "base": "1s", "attempts": 2}`, a
        `conveyor.kinds.Retry` or a RetryPolicy); `queue`, `priority`, `max_attempts`
        and `labels` are set on top of `request`. Read what the job returned, once it
        has completed, with `job_output(await client.get(id))`."""
        message = job_request(
            request, kind=kind, input=input, retry=retry, queue=queue, priority=priority,
            max_attempts=max_attempts, labels=labels,
        )  # fmt: skip
        result: job_service_pb2.SubmitJobResponse = await self._call(self._jobs.SubmitJob, message, timeout)
        return result

    async def submit_many(
        self,
        requests: Iterable[JobRequest],
        *,
        allow_partial: bool = False,
        timeout: float | None = UNSET,
    ) -> job_service_pb2.SubmitJobsResponse:
        """Submit jobs in one call. `results` has one entry per request, in order.

        Without `allow_partial` it is all or none: one invalid request fails the call
        (INVALID_ARGUMENT naming each bad field as `requests[i].field`). With it, the
        valid ones are submitted and each refused one is in `errors` (index and a
        `google.rpc.Status`) with an empty id in `results`. Requests refused for
        deduplication are reported in `errors` either way.
        """
        batch = job_service_pb2.SubmitJobsRequest(
            requests=[to_submit_request(r) for r in requests], allow_partial=allow_partial
        )
        response: job_service_pb2.SubmitJobsResponse = await self._call(self._jobs.SubmitJobs, batch, timeout)
        return response

    async def get(self, job_id: str, *, timeout: float | None = UNSET) -> job_pb2.Job:
        response: job_service_pb2.GetJobResponse = await self._call(
            self._jobs.GetJob, job_service_pb2.GetJobRequest(id=job_id), timeout
        )
        return response.job

    async def list(
        self,
        *,
        queue: str = "",
        state: str | int | None = None,
        kind: str = "",
        page_size: int = 0,
        limit: int | None = None,
    ) -> AsyncIterator[job_pb2.Job]:
        """Jobs, newest first, following page tokens; at most `limit` of them. `kind`
        ("noop", "browser" or a kind's name) needs `queue`."""
        request = job_service_pb2.ListJobsRequest(queue=queue, state=to_state(state), kind=kind, page_size=page_size)
        seen = 0
        while True:
            response: job_service_pb2.ListJobsResponse = await self._call(self._jobs.ListJobs, request)
            for job in response.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield job
            if not response.next_page_token or (limit is not None and seen >= limit):
                return
            request.page_token = response.next_page_token

    async def watch(
        self,
        job_id: str,
        after_sequence: int | None = None,
        *,
        reconnect: bool = True,
        max_reconnects: int = 5,
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        """The job's snapshot, then each of its events in order, until it ends.

        With `reconnect`, a stream cut by UNAVAILABLE (a gateway restart, a network
        blip) is resumed after the last sequence seen: nothing missed, nothing
        repeated; the server sends a fresh snapshot first. `max_reconnects` bounds
        consecutive failed attempts.
        """
        last = after_sequence
        failures = 0
        while True:
            request = job_service_pb2.WatchJobRequest(id=job_id)
            if last is not None:
                request.after_sequence = last
            call = self._jobs.WatchJob(request, metadata=self._metadata)
            try:
                async for message in call:
                    failures = 0
                    kind = message.WhichOneof("kind")
                    if kind == "job":
                        last = max(last or 0, message.job.last_sequence)
                    elif kind == "event":
                        last = message.event.sequence
                    yield message
                return
            except grpc.aio.AioRpcError as err:
                if not reconnect or err.code() not in RECONNECT_CODES or failures >= max_reconnects:
                    raise ConveyorRpcError.from_grpc(err) from err
            finally:
                call.cancel()
            failures += 1
            await asyncio.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

    async def wait(self, job_id: str, timeout: float = 30.0) -> job_pb2.Job:
        """Long-poll until the job has ended or `timeout` seconds have passed; returns
        the job either way (check `job.state`)."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = max(0.0, min(deadline - time.monotonic(), MAX_WAIT_CHUNK))
            request = job_service_pb2.WaitJobRequest(id=job_id, timeout=duration(chunk))
            response: job_service_pb2.WaitJobResponse = await self._call(self._jobs.WaitJob, request, chunk + 15.0)
            if response.done or is_terminal(response.job.state) or time.monotonic() >= deadline:
                return response.job

    async def cancel(self, job_id: str, *, timeout: float | None = UNSET) -> job_pb2.Job:
        response: job_service_pb2.CancelJobResponse = await self._call(
            self._jobs.CancelJob, job_service_pb2.CancelJobRequest(id=job_id), timeout
        )
        return response.job

    async def retry(self, job_id: str, *, timeout: float | None = UNSET) -> job_pb2.Job:
        response: job_service_pb2.RetryJobResponse = await self._call(
            self._jobs.RetryJob, job_service_pb2.RetryJobRequest(id=job_id), timeout
        )
        return response.job

    async def artifact_chunks(self, job_id: str, name: str) -> AsyncIterator[job_service_pb2.GetArtifactResponse]:
        """The artifact's chunks as they arrive (the first carries type and size)."""
        request = job_service_pb2.GetArtifactRequest(job_id=job_id, name=name)
        async for chunk in self._stream(self._jobs.GetArtifact, request):
            yield chunk

    async def artifact(self, job_id: str, name: str) -> bytes:
        """The whole artifact (a screenshot) as bytes."""
        return b"".join([chunk.data async for chunk in self.artifact_chunks(job_id, name)])

    # --- queues ------------------------------------------------------------------------
    async def queues(self) -> builtins.list[queue_service_pb2.Queue]:
        """Every queue that has had a job, with its counts."""
        request = queue_service_pb2.ListQueuesRequest()
        out: builtins.list[queue_service_pb2.Queue] = []
        while True:
            response: queue_service_pb2.ListQueuesResponse = await self._call(self._queues.ListQueues, request)
            out.extend(response.queues)
            if not response.next_page_token:
                return out
            request.page_token = response.next_page_token

    async def queue(self, name: str = "default") -> queue_service_pb2.Queue:
        """One queue: paused, counts per state, concurrency, rate limit and `stats`."""
        response: queue_service_pb2.GetQueueResponse = await self._call(
            self._queues.GetQueue, queue_service_pb2.GetQueueRequest(queue=name)
        )
        return response.queue

    async def update_queue(
        self,
        name: str,
        concurrency: int | None = None,
        host_rate_limit: int | None = None,
        *,
        timeout: float | None = UNSET,
    ) -> queue_service_pb2.Queue:
        """Set the queue's concurrency (0: the server default) and/or its per-host
        navigation rate limit (per second; 0: no limit). Only what is given changes."""
        response: queue_service_pb2.UpdateQueueResponse = await self._call(
            self._queues.UpdateQueue, update_queue_request(name, concurrency, host_rate_limit), timeout
        )
        return response.queue

    async def pause_queue(self, name: str, *, timeout: float | None = UNSET) -> queue_service_pb2.Queue:
        """No new job of the queue starts until it is resumed (submissions are still
        accepted; running jobs finish)."""
        response: queue_service_pb2.PauseQueueResponse = await self._call(
            self._queues.PauseQueue, queue_service_pb2.PauseQueueRequest(queue=name), timeout
        )
        return response.queue

    async def resume_queue(self, name: str, *, timeout: float | None = UNSET) -> queue_service_pb2.Queue:
        response: queue_service_pb2.ResumeQueueResponse = await self._call(
            self._queues.ResumeQueue, queue_service_pb2.ResumeQueueRequest(queue=name), timeout
        )
        return response.queue

    async def clean_queue(
        self,
        name: str,
        state: str | int,
        older_than: float | dt.timedelta | None = None,
        limit: int = 0,
        *,
        timeout: float | None = UNSET,
    ) -> int:
        """Delete the queue's jobs in `state` (completed, failed or cancelled) that
        ended more than `older_than` (seconds or a timedelta; None: any time) ago,
        with their events and artifacts; at most `limit` (0: the server maximum).
        Returns how many were deleted."""
        response: queue_service_pb2.CleanQueueResponse = await self._call(
            self._queues.CleanQueue, clean_queue_request(name, state, older_than, limit), timeout
        )
        return int(response.deleted)

    async def retry_failed(
        self,
        name: str,
        limit: int = 0,
        *,
        priority: str | int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = UNSET,
    ) -> int:
        """Give every FAILED job of the queue (at most `limit`; 0: the server maximum)
        a fresh set of attempts: `max_attempts` of them (None: each its own), at
        `priority` (None: each keeps its own; e.g. "low" to reprocess a dead-letter
        set behind fresh work). Returns how many were retried."""
        response: queue_service_pb2.RetryFailedJobsResponse = await self._call(
            self._queues.RetryFailedJobs, retry_failed_request(name, limit, priority, max_attempts), timeout
        )
        return int(response.retried)

    async def watch_queue(
        self,
        name: str,
        after_sequence: int | None = None,
        *,
        reconnect: bool = True,
        max_reconnects: int = 5,
        max_batch_size: int = 0,
    ) -> AsyncIterator[queue_service_pb2.WatchQueueResponse]:
        """Every event of the queue's jobs, in order, and heartbeats while idle; the
        stream does not end by itself (leave the loop, or cancel, to stop).

        `after_sequence` (a `JobEvent.queue_sequence`) replays the events after it;
        None starts from now. With `reconnect`, a stream cut by UNAVAILABLE is resumed
        after the last queue_sequence seen, so nothing is missed or repeated. (Before
        the first event there is no sequence to resume from: such a reconnect starts
        from now again, or from `after_sequence` if given.) With `max_batch_size`
        above 1, a message carries up to that many events in `events` (see
        `queue_events()`): far cheaper on both ends for a busy queue.
        """
        last = after_sequence
        failures = 0
        while True:
            call = self._queues.WatchQueue(
                watch_queue_request(name, last, max_batch_size), metadata=self._metadata
            )
            try:
                async for message in call:
                    failures = 0
                    if events := queue_events(message):
                        last = events[-1].queue_sequence
                    yield message
                return
            except grpc.aio.AioRpcError as err:
                if not reconnect or err.code() not in RECONNECT_CODES or failures >= max_reconnects:
                    raise ConveyorRpcError.from_grpc(err) from err
            finally:
                call.cancel()
            failures += 1
            await asyncio.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

    async def workers(self, *, timeout: float | None = UNSET) -> builtins.list[queue_service_pb2.Worker]:
        """The executor worker processes alive now (slots, running jobs, heartbeat)."""
        response: queue_service_pb2.ListWorkersResponse = await self._call(
            self._queues.ListWorkers, queue_service_pb2.ListWorkersRequest(), timeout
        )
        return builtins.list(response.workers)

    async def kinds(self, *, timeout: float | None = UNSET) -> dict[str, int]:
        """The job kinds the live executor workers serve, each with how many workers
        serve it (from ListWorkers)."""
        return kinds_of(await self.workers(timeout=timeout))

    # --- health ------------------------------------------------------------------------
    async def health(self, service: str = "", *, timeout: float | None = UNSET) -> str:
        """The gateway's grpc.health.v1 status: "SERVING", "NOT_SERVING", ..."""
        response = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # --- schedules ---------------------------------------------------------------------
    async def create_schedule(self, request: ScheduleRequest, *, timeout: float | None = UNSET) -> Schedule:
        """Create a schedule: a CreateScheduleRequest, or a dict in the protobuf JSON
        mapping such as `{"cron": "*/5 * * * *", "timeZone": "Europe/Berlin",
        "template": {"noop": {}}}`. The answer has its `id` and `next_run_time`."""
        response: schedule_pb.CreateScheduleResponse = await self._call(
            self._schedules.CreateSchedule, to_create_schedule_request(request), timeout
        )
        return response.schedule

    async def list_schedules(self, *, page_size: int = 0) -> builtins.list[Schedule]:
        """Every schedule of the caller, oldest first (all pages)."""
        request = schedule_pb.ListSchedulesRequest(page_size=page_size)
        out: builtins.list[Schedule] = []
        while True:
            response: schedule_pb.ListSchedulesResponse = await self._call(self._schedules.ListSchedules, request)
            out.extend(response.schedules)
            if not response.next_page_token:
                return out
            request.page_token = response.next_page_token

    async def get_schedule(self, schedule_id: str, *, timeout: float | None = UNSET) -> Schedule:
        response: schedule_pb.GetScheduleResponse = await self._call(
            self._schedules.GetSchedule, schedule_pb.GetScheduleRequest(id=schedule_id), timeout
        )
        return response.schedule

    async def delete_schedule(self, schedule_id: str, *, timeout: float | None = UNSET) -> None:
        """Delete a schedule (the jobs it submitted stay)."""
        await self._call(self._schedules.DeleteSchedule, schedule_pb.DeleteScheduleRequest(id=schedule_id), timeout)

    async def pause_schedule(self, schedule_id: str, *, timeout: float | None = UNSET) -> Schedule:
        response: schedule_pb.PauseScheduleResponse = await self._call(
            self._schedules.PauseSchedule, schedule_pb.PauseScheduleRequest(id=schedule_id), timeout
        )
        return response.schedule

    async def resume_schedule(self, schedule_id: str, *, timeout: float | None = UNSET) -> Schedule:
        """Resume a paused schedule; its next run is the first occurrence from now on."""
        response: schedule_pb.ResumeScheduleResponse = await self._call(
            self._schedules.ResumeSchedule, schedule_pb.ResumeScheduleRequest(id=schedule_id), timeout
        )
        return response.schedule

    # --- API keys (the admin role) --------------------------------------------------------
    async def create_key(
        self, tenant: str, role: key_service_pb2.Role.ValueType, name: str = "", *, timeout: float | None = UNSET
    ) -> key_service_pb2.CreateKeyResponse:
        """A new key of `tenant` with `role`; the answer's `secret` is shown this once."""
        request = key_service_pb2.CreateKeyRequest(tenant=tenant, role=role, name=name)
        response: key_service_pb2.CreateKeyResponse = await self._call(self._keys.CreateKey, request, timeout)
        return response

    async def list_keys(
        self, tenant: str = "", *, timeout: float | None = UNSET
    ) -> builtins.list[key_service_pb2.ApiKey]:
        response: key_service_pb2.ListKeysResponse = await self._call(
            self._keys.ListKeys, key_service_pb2.ListKeysRequest(tenant=tenant), timeout
        )
        return builtins.list(response.keys)

    async def revoke_key(self, key_id: str, *, timeout: float | None = UNSET) -> key_service_pb2.ApiKey:
        response: key_service_pb2.RevokeKeyResponse = await self._call(
            self._keys.RevokeKey, key_service_pb2.RevokeKeyRequest(id=key_id), timeout
        )
        return response.key

    async def whoami(self, *, timeout: float | None = UNSET) -> key_service_pb2.WhoAmIResponse:
        """The tenant and role of the key in use."""
        response: key_service_pb2.WhoAmIResponse = await self._call(
            self._keys.WhoAmI, key_service_pb2.WhoAmIRequest(), timeout
        )
        return response
