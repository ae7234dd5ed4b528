"""The Python SDK against a scripted in-process gRPC server (real gRPC on loopback):
request building, the API key, pagination, watch and watch_queue resumption,
partial batches, queue controls, workers, artifacts, and the decoding of rich errors.
The SDK against the real gateway is covered by test_cli.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clients.demo import EXAMPLE_JOB
from conveyor.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from conveyor_client import AsyncConveyorClient, ConveyorClient, ConveyorRpcError, queue_events, to_submit_request


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    *details: Any,
) -> None:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    await context.abort(code, message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))


class FakeJobs(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self) -> None:
        self.submitted: list[job_service_pb2.SubmitJobRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.watch_requests: list[job_service_pb2.WatchJobRequest] = []
        self.wait_calls = 0

    def _record(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})

    async def SubmitJob(
        self, request: job_service_pb2.SubmitJobRequest, context: Any
    ) -> job_service_pb2.SubmitJobResponse:
        self._record(context)
        if request.queue == "bad queue":
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid job request",
                error_details_pb2.ErrorInfo(reason="FIELD_INVALID", domain="conveyor.dev"),
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="queue", description="letters, digits, '-', '_', '.'"
                        )
                    ]
                ),
            )
        self.submitted.append(request)
        n = len(self.submitted)
        return job_service_pb2.SubmitJobResponse(id=f"job-{n}", state=job_pb2.JOB_STATE_WAITING, position=n)

    async def SubmitJobs(
        self, request: job_service_pb2.SubmitJobsRequest, context: Any
    ) -> job_service_pb2.SubmitJobsResponse:
        """Requests for the queue "bad queue" are refused: the whole call, or (with
        allow_partial) just them, by index."""
        bad = [i for i, r in enumerate(request.requests) if r.queue == "bad queue"]
        if bad and not request.allow_partial:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"requests[{bad[0]}].queue: invalid")
        response = job_service_pb2.SubmitJobsResponse(
            results=[
                job_service_pb2.SubmitJobResponse() if i in bad else job_service_pb2.SubmitJobResponse(
                    id=f"batch-{i}", position=i + 1
                )
                for i, _ in enumerate(request.requests)
            ]
        )  # fmt: skip
        for i in bad:
            status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"requests[{i}].queue: invalid")
            response.errors.add(index=i, error=status)
        return response

    async def GetJob(self, request: job_service_pb2.GetJobRequest, context: Any) -> job_service_pb2.GetJobResponse:
        self._record(context)
        if request.id != "job-1":
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"job {request.id!r} not found",
                error_details_pb2.ErrorInfo(reason="JOB_NOT_FOUND", domain="conveyor.dev"),
            )
        return job_service_pb2.GetJobResponse(job=job_pb2.Job(id="job-1", state=job_pb2.JOB_STATE_COMPLETED))

    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: Any
    ) -> job_service_pb2.ListJobsResponse:
        ids = [f"j{i}" for i in range(5)]
        start = int(request.page_token or 0)
        size = request.page_size or 2
        page = ids[start : start + size]
        token = str(start + size) if start + size < len(ids) else ""
        return job_service_pb2.ListJobsResponse(
            jobs=[job_pb2.Job(id=i, state=request.state, queue=request.queue) for i in page],
            next_page_token=token,
        )

    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: Any
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        """Events 1..4; the first stream breaks (UNAVAILABLE) after event 2."""
        self.watch_requests.append(request)
        after = request.after_sequence if request.HasField("after_sequence") else 0
        yield job_service_pb2.WatchJobResponse(
            job=job_pb2.Job(id=request.id, state=job_pb2.JOB_STATE_ACTIVE, last_sequence=after)
        )
        for seq in range(after + 1, 5):
            state = job_pb2.JOB_STATE_COMPLETED if seq == 4 else job_pb2.JOB_STATE_ACTIVE
            yield job_service_pb2.WatchJobResponse(event=job_pb2.JobEvent(sequence=seq, job_id=request.id, state=state))
            if len(self.watch_requests) == 1 and seq == 2:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway shutting down")

    async def WaitJob(self, request: job_service_pb2.WaitJobRequest, context: Any) -> job_service_pb2.WaitJobResponse:
        self.wait_calls += 1
        done = self.wait_calls >= 3
        state = job_pb2.JOB_STATE_COMPLETED if done else job_pb2.JOB_STATE_ACTIVE
        return job_service_pb2.WaitJobResponse(job=job_pb2.Job(id=request.id, state=state), done=done)

    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: Any
    ) -> job_service_pb2.CancelJobResponse:
        return job_service_pb2.CancelJobResponse(job=job_pb2.Job(id=request.id, state=job_pb2.JOB_STATE_CANCELLED))

    async def RetryJob(
        self, request: job_service_pb2.RetryJobRequest, context: Any
    ) -> job_service_pb2.RetryJobResponse:
        return job_service_pb2.RetryJobResponse(job=job_pb2.Job(id=request.id, state=job_pb2.JOB_STATE_WAITING))

    async def GetArtifact(
        self, request: job_service_pb2.GetArtifactRequest, context: Any
    ) -> AsyncIterator[job_service_pb2.GetArtifactResponse]:
        yield job_service_pb2.GetArtifactResponse(data=b"\x89PNG", content_type="image/png", size_bytes=8)
        yield job_service_pb2.GetArtifactResponse(data=b"rest")


class FakeQueues(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.watch_requests: list[queue_service_pb2.WatchQueueRequest] = []

    async def ListQueues(
        self, request: queue_service_pb2.ListQueuesRequest, context: Any
    ) -> queue_service_pb2.ListQueuesResponse:
        if not request.page_token:
            return queue_service_pb2.ListQueuesResponse(queues=[queue_service_pb2.Queue(name="a")], next_page_token="2")
        return queue_service_pb2.ListQueuesResponse(queues=[queue_service_pb2.Queue(name="b")])

    async def GetQueue(
        self, request: queue_service_pb2.GetQueueRequest, context: Any
    ) -> queue_service_pb2.GetQueueResponse:
        return queue_service_pb2.GetQueueResponse(
            queue=queue_service_pb2.Queue(name=request.queue, counts=queue_service_pb2.QueueCounts(waiting=7))
        )

    async def UpdateQueue(
        self, request: queue_service_pb2.UpdateQueueRequest, context: Any
    ) -> queue_service_pb2.UpdateQueueResponse:
        self.requests.append(request)
        return queue_service_pb2.UpdateQueueResponse(
            queue=queue_service_pb2.Queue(
                name=request.queue, concurrency=request.concurrency or 4, host_rate_limit=request.host_rate_limit
            )
        )

    async def PauseQueue(
        self, request: queue_service_pb2.PauseQueueRequest, context: Any
    ) -> queue_service_pb2.PauseQueueResponse:
        self.requests.append(request)
        return queue_service_pb2.PauseQueueResponse(queue=queue_service_pb2.Queue(name=request.queue, paused=True))

    async def ResumeQueue(
        self, request: queue_service_pb2.ResumeQueueRequest, context: Any
    ) -> queue_service_pb2.ResumeQueueResponse:
        self.requests.append(request)
        return queue_service_pb2.ResumeQueueResponse(queue=queue_service_pb2.Queue(name=request.queue, paused=False))

    async def CleanQueue(
        self, request: queue_service_pb2.CleanQueueRequest, context: Any
    ) -> queue_service_pb2.CleanQueueResponse:
        self.requests.append(request)
        return queue_service_pb2.CleanQueueResponse(deleted=3)

    async def RetryFailedJobs(
        self, request: queue_service_pb2.RetryFailedJobsRequest, context: Any
    ) -> queue_service_pb2.RetryFailedJobsResponse:
        self.requests.append(request)
        return queue_service_pb2.RetryFailedJobsResponse(retried=2)

    async def WatchQueue(
        self, request: queue_service_pb2.WatchQueueRequest, context: Any
    ) -> AsyncIterator[queue_service_pb2.WatchQueueResponse]:
        """Queue events 11..14 (after 10 unless resumed) with a heartbeat first, one
        per message or in batches of max_batch_size; the first stream breaks
        (UNAVAILABLE) after the message with event 12; the last one stays open."""
        self.watch_requests.append(request)
        after = request.after_sequence if request.HasField("after_sequence") else 10
        yield queue_service_pb2.WatchQueueResponse(heartbeat=job_pb2.Heartbeat())
        size = max(1, request.max_batch_size)  # events per message
        for first in range(after + 1, 15, size):
            events = [
                job_pb2.JobEvent(queue_sequence=seq, sequence=seq - 10, job_id=f"j{seq}", queue=request.queue)
                for seq in range(first, min(first + size, 15))
            ]
            if request.max_batch_size > 1:
                yield queue_service_pb2.WatchQueueResponse(events=event_batch(events))
            else:
                yield queue_service_pb2.WatchQueueResponse(event=events[0])
            if len(self.watch_requests) == 1 and events[-1].queue_sequence >= 12:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway shutting down")
        await asyncio.Event().wait()  # a queue's stream never ends by itself

    async def ListWorkers(
        self, request: queue_service_pb2.ListWorkersRequest, context: Any
    ) -> queue_service_pb2.ListWorkersResponse:
        return queue_service_pb2.ListWorkersResponse(
            workers=[
                queue_service_pb2.Worker(id="w1", host="h", pid=10, slots=4, running_job_ids=["j1"]),
                queue_service_pb2.Worker(id="w2", host="h", pid=11, slots=4),
            ]
        )


class Fake:
    def __init__(self, target: str, jobs: FakeJobs, queues: FakeQueues) -> None:
        self.target = target
        self.jobs = jobs
        self.queues = queues


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    server = grpc.aio.server()
    jobs = FakeJobs()
    queues = FakeQueues()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(queues, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Fake(f"127.0.0.1:{port}", jobs, queues)
    finally:
        await server.stop(None)


def test_dicts_in_the_json_mapping_become_requests() -> None:
    request = to_submit_request(EXAMPLE_JOB)
    assert request.priority == job_pb2.PRIORITY_HIGH
    assert request.max_attempts == 3
    assert request.browser.steps[2].click.target.fallbacks == ["#submit"]
    assert request.browser.steps[3].expect.text_contains == "Hello Ada"
    assert request.browser.steps[5].screenshot.full_page
    # The proto's own field names are accepted too, and a message passes through.
    assert to_submit_request({"max_attempts": 3, "noop": {}}).max_attempts == 3
    assert to_submit_request(request) is request


def test_a_bad_dict_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="priority"):
        to_submit_request({"priority": "PRIORITY_URGENT", "noop": {}})
    with pytest.raises(ValueError, match="bogus"):
        to_submit_request({"bogus": 1})


async def test_submit_sends_the_request_and_the_api_key(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target, api_key="k-123") as client:
        response = await client.submit(EXAMPLE_JOB)
        assert (response.id, response.position) == ("job-1", 1)
        many = await client.submit_many([{"noop": {}}, {"noop": {"sleep": "1s"}}])
        assert [r.id for r in many.results] == ["batch-0", "batch-1"]
        assert not many.errors
    assert fake.jobs.submitted[0] == to_submit_request(EXAMPLE_JOB)
    assert fake.jobs.metadata[0]["authorization"] == "Bearer k-123"
    assert fake.jobs.metadata[0]["user-agent"].startswith("conveyor-python/")


async def test_no_api_key_no_authorization(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        await client.get("job-1")
    assert "authorization" not in fake.jobs.metadata[0]


async def test_rich_errors_are_decoded(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        with pytest.raises(ConveyorRpcError) as caught:
            await client.submit({"queue": "bad queue", "noop": {}})
        err = caught.value
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.reason == "FIELD_INVALID"
        assert [v.field for v in err.field_violations] == ["queue"]
        assert str(err).startswith("INVALID_ARGUMENT: invalid job request [queue: letters")
        assert err.status is not None and err.status.code == code_pb2.INVALID_ARGUMENT

        with pytest.raises(ConveyorRpcError) as caught:
            await client.get("nope")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == "JOB_NOT_FOUND"
        assert str(caught.value) == "NOT_FOUND: job 'nope' not found"


async def test_list_follows_page_tokens(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        jobs = [j async for j in client.list(queue="q", state="completed", page_size=2)]
        assert [j.id for j in jobs] == ["j0", "j1", "j2", "j3", "j4"]
        assert {j.state for j in jobs} == {job_pb2.JOB_STATE_COMPLETED}
        assert {j.queue for j in jobs} == {"q"}
        assert [j.id async for j in client.list(limit=3)] == ["j0", "j1", "j2"]
        with pytest.raises(ValueError, match="unknown job state"):
            [j async for j in client.list(state="DONE")]


async def test_watch_resumes_after_the_last_sequence(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        messages = [m async for m in client.watch("job-1")]
    sequences = [m.event.sequence for m in messages if m.WhichOneof("kind") == "event"]
    assert sequences == [1, 2, 3, 4]  # nothing missed, nothing twice
    assert [m.WhichOneof("kind") for m in messages].count("job") == 2  # one per stream
    assert not fake.jobs.watch_requests[0].HasField("after_sequence")
    assert fake.jobs.watch_requests[1].after_sequence == 2


async def test_watch_without_reconnect_raises(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        seen = []
        with pytest.raises(ConveyorRpcError) as caught:
            async for m in client.watch("job-1", reconnect=False):
                seen.append(m)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(seen) == 3


async def test_wait_long_polls_until_done(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        job = await client.wait("job-1", timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED
    assert fake.jobs.wait_calls == 3


async def test_artifact_cancel_retry_queues_health(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        assert await client.artifact("job-1", "step-5.png") == b"\x89PNGrest"
        assert (await client.cancel("job-1")).state == job_pb2.JOB_STATE_CANCELLED
        assert (await client.retry("job-1")).state == job_pb2.JOB_STATE_WAITING
        assert [q.name for q in await client.queues()] == ["a", "b"]
        assert (await client.queue("x")).counts.waiting == 7
        assert await client.health() == "SERVING"


async def test_submit_many_all_or_none_or_partial(fake: Fake) -> None:
    batch: list[dict[str, Any]] = [{"noop": {}}, {"queue": "bad queue", "noop": {}}, {"noop": {}}]
    async with AsyncConveyorClient(fake.target) as client:
        with pytest.raises(ConveyorRpcError) as caught:
            await client.submit_many(batch)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "requests[1].queue" in caught.value.message

        partial = await client.submit_many(batch, allow_partial=True)
    assert [r.id for r in partial.results] == ["batch-0", "", "batch-2"]
    assert [(e.index, e.error.code) for e in partial.errors] == [(1, code_pb2.INVALID_ARGUMENT)]
    assert "requests[1].queue" in partial.errors[0].error.message


async def test_queue_controls_send_what_was_given(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        assert (await client.pause_queue("q")).paused
        assert not (await client.resume_queue("q")).paused
        updated = await client.update_queue("q", host_rate_limit=5)
        assert (updated.concurrency, updated.host_rate_limit) == (4, 5)
        await client.update_queue("q", concurrency=0)  # 0 is sent: back to the server default
        with pytest.raises(ValueError, match="concurrency and/or host_rate_limit"):
            await client.update_queue("q")
        assert await client.clean_queue("q", "completed", older_than=3600, limit=50) == 3
        assert await client.clean_queue("q", "CANCELLED", older_than=dt.timedelta(milliseconds=1500)) == 3
        assert await client.clean_queue("q", job_pb2.JOB_STATE_FAILED) == 3
        with pytest.raises(ValueError, match="unknown job state"):
            await client.clean_queue("q", "done")
        assert await client.retry_failed("q", limit=10) == 2
    pause, resume, rate, conc, clean_old, clean_ms, clean_all, retry = fake.queues.requests
    assert (pause.queue, resume.queue) == ("q", "q")
    assert not rate.HasField("concurrency") and rate.host_rate_limit == 5
    assert conc.HasField("concurrency") and conc.concurrency == 0 and not conc.HasField("host_rate_limit")
    assert (clean_old.state, clean_old.older_than.seconds, clean_old.limit) == (job_pb2.JOB_STATE_COMPLETED, 3600, 50)
    assert clean_ms.state == job_pb2.JOB_STATE_CANCELLED
    assert (clean_ms.older_than.seconds, clean_ms.older_than.nanos) == (1, 500_000_000)
    assert clean_all.state == job_pb2.JOB_STATE_FAILED and not clean_all.HasField("older_than")
    assert (retry.queue, retry.limit) == ("q", 10)


async def test_workers(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        workers = await client.workers()
    assert [(w.id, list(w.running_job_ids)) for w in workers] == [("w1", ["j1"]), ("w2", [])]


def event_batch(events: list[job_pb2.JobEvent]) -> queue_service_pb2.JobEventBatch:
    return queue_service_pb2.JobEventBatch(events=events)


async def _queue_events(client: AsyncConveyorClient, name: str, count: int, **kw: Any) -> list[int]:
    """The queue sequences of the first `count` events (the stream stays open)."""
    seen: list[int] = []
    async for message in client.watch_queue(name, **kw):
        seen += [event.queue_sequence for event in queue_events(message)]
        if len(seen) >= count:
            break
    return seen


async def test_watch_queue_resumes_after_the_last_queue_sequence(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        assert await asyncio.wait_for(_queue_events(client, "q", 4), 10) == [11, 12, 13, 14]
    first, second = fake.queues.watch_requests
    assert not first.HasField("after_sequence")  # from now on
    assert (second.queue, second.after_sequence) == ("q", 12)  # resumed: nothing missed, nothing twice


async def test_watch_queue_in_batches_resumes_after_the_last_event_of_a_batch(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        assert await asyncio.wait_for(_queue_events(client, "q", 4, max_batch_size=3), 10) == [11, 12, 13, 14]
    first, second = fake.queues.watch_requests
    assert first.max_batch_size == second.max_batch_size == 3
    assert second.after_sequence == 13  # the first stream broke after the batch 11-13


async def test_watch_queue_from_a_sequence_and_without_reconnect(fake: Fake) -> None:
    async with AsyncConveyorClient(fake.target) as client:
        with pytest.raises(ConveyorRpcError) as caught:
            await asyncio.wait_for(_queue_events(client, "q", 4, after_sequence=10, reconnect=False), 10)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        # A fresh watch replays what follows the sequence given.
        assert await asyncio.wait_for(_queue_events(client, "q", 2, after_sequence=12), 10) == [13, 14]
    assert [r.after_sequence for r in fake.queues.watch_requests] == [10, 12]


async def test_unreachable_gateway_is_unavailable() -> None:
    async with AsyncConveyorClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(ConveyorRpcError) as caught:
            await client.get("x")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_the_sync_client_has_the_same_surface(fake: Fake) -> None:
    def use() -> None:
        with ConveyorClient(fake.target, api_key="s") as client:
            assert client.submit({"noop": {"sleep": "0.1s"}}).id == "job-1"
            assert client.get("job-1").state == job_pb2.JOB_STATE_COMPLETED
            assert [j.id for j in client.list(limit=4)] == ["j0", "j1", "j2", "j3"]
            events = [m.event.sequence for m in client.watch("job-1") if m.HasField("event")]
            assert events == [1, 2, 3, 4]
            assert client.artifact("job-1", "a.png") == b"\x89PNGrest"
            assert [q.name for q in client.queues()] == ["a", "b"]
            assert client.health() == "SERVING"
            with pytest.raises(ConveyorRpcError, match="NOT_FOUND"):
                client.get("nope")
            batch = client.submit_many([{"noop": {}}, {"queue": "bad queue", "noop": {}}], allow_partial=True)
            assert [e.index for e in batch.errors] == [1]
            assert client.pause_queue("q").paused and not client.resume_queue("q").paused
            assert client.update_queue("q", concurrency=2).concurrency == 2
            assert client.clean_queue("q", "failed", older_than=60) == 3
            assert client.retry_failed("q") == 2
            assert [w.id for w in client.workers()] == ["w1", "w2"]
            seen = []
            for message in client.watch_queue("q"):
                if message.HasField("event"):
                    seen.append(message.event.queue_sequence)
                    if len(seen) == 4:
                        break
            assert seen == [11, 12, 13, 14]

    await asyncio.to_thread(use)
    assert fake.jobs.metadata[0]["authorization"] == "Bearer s"


# --- job kinds: submit any kind, its output, list by kind, kinds served, dead-letter overrides
class KindJobs(FakeJobs):
    """Also records ListJobs requests, and GetJob of "kind-1" is a completed job of a
    user's kind with an output."""

    def __init__(self) -> None:
        super().__init__()
        self.list_requests: list[job_service_pb2.ListJobsRequest] = []

    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: Any
    ) -> job_service_pb2.ListJobsResponse:
        self.list_requests.append(request)
        return await super().ListJobs(request, context)

    async def GetJob(self, request: job_service_pb2.GetJobRequest, context: Any) -> job_service_pb2.GetJobResponse:
        from google.protobuf import json_format

        if request.id != "kind-1":
            return await super().GetJob(request, context)
        job = job_pb2.Job(id="kind-1", kind="chat", state=job_pb2.JOB_STATE_COMPLETED)
        job.kind_task.name = "chat"
        json_format.ParseDict({"reply": {"role": "assistant", "content": "hi"}, "turns": 1, "score": 0.5,
                               "tags": ["a", None, True]}, job.result.output)
        return job_service_pb2.GetJobResponse(job=job)


class KindQueues(FakeQueues):
    async def ListWorkers(
        self, request: queue_service_pb2.ListWorkersRequest, context: Any
    ) -> queue_service_pb2.ListWorkersResponse:
        return queue_service_pb2.ListWorkersResponse(
            workers=[
                queue_service_pb2.Worker(id="w1", kinds=["noop", "browser", "crawl"]),
                queue_service_pb2.Worker(id="w2", kinds=["noop", "chat", "wordcount", "chat"]),
                queue_service_pb2.Worker(id="w3", kinds=["noop", "chat"]),
            ]
        )


class KindFake:
    def __init__(self, target: str, jobs: KindJobs, queues: KindQueues) -> None:
        self.target = target
        self.jobs = jobs
        self.queues = queues


@pytest.fixture
async def kind_fake() -> AsyncIterator[KindFake]:
    server = grpc.aio.server()
    jobs, queues = KindJobs(), KindQueues()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(queues, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield KindFake(f"127.0.0.1:{port}", jobs, queues)
    finally:
        await server.stop(None)


CHAT_INPUT = {"messages": [{"role": "user", "content": "what is 6 * 7?"}], "metadata": {"session": "s-1", "n": 3}}


def test_a_job_of_a_kind_is_its_name_and_input() -> None:
    from google.protobuf import json_format
    from pydantic import BaseModel

    from conveyor_client import job_request

    request = job_request(kind="chat", input=CHAT_INPUT, queue="agents", priority="high", labels={"team": "ai"})
    # The same request as the JSON mapping that buf curl sends.
    assert request == to_submit_request(
        {"queue": "agents", "priority": "PRIORITY_HIGH", "labels": {"team": "ai"},
         "kind": {"name": "chat", "input": CHAT_INPUT}}
    )  # fmt: skip
    assert request.WhichOneof("task") == "kind"
    assert json_format.MessageToDict(request.kind.input) == {
        "messages": [{"role": "user", "content": "what is 6 * 7?"}], "metadata": {"session": "s-1", "n": 3.0},
    }  # fmt: skip
    # Fields of a base request stay; an empty input is still sent as {}.
    based = job_request({"queue": "q", "maxAttempts": 5, "labels": {"a": "b"}}, kind="flaky")
    assert (based.queue, based.max_attempts, dict(based.labels), based.kind.name) == ("q", 5, {"a": "b"}, "flaky")
    assert based.kind.HasField("input") and not based.kind.input.fields
    assert not based.HasField("retry")

    class Count(BaseModel):
        texts: list[str]
        when: dt.date

    typed = job_request(kind="wordcount", input=Count(texts=["a b"], when=dt.date(2030, 1, 2)))
    assert json_format.MessageToDict(typed.kind.input) == {"texts": ["a b"], "when": "2030-01-02"}


def test_a_job_may_override_its_kinds_retry_policy() -> None:
    from conveyor.kinds import Retry
    from conveyor.v1 import task_pb2
    from conveyor_client import job_request

    fixed = job_request(kind="wordcount", retry={"backoff": "fixed", "base": "1.5s", "max": 30, "attempts": 2})
    assert fixed.retry.backoff == task_pb2.BACKOFF_FIXED
    assert (fixed.retry.base.seconds, fixed.retry.base.nanos, fixed.retry.max.seconds) == (1, 500_000_000, 30)
    assert fixed.max_attempts == 2
    explicit = job_request(kind="wordcount", retry={"attempts": 2}, max_attempts=7)
    assert explicit.max_attempts == 7 and not explicit.retry.HasField("base")  # max_attempts= wins
    from_kind_api = job_request(kind="chat", retry=Retry(attempts=4, backoff="exponential", base="500ms", max="1m"))
    assert from_kind_api.retry.backoff == task_pb2.BACKOFF_EXPONENTIAL
    assert (from_kind_api.retry.base.nanos, from_kind_api.retry.max.seconds, from_kind_api.max_attempts) == (
        500_000_000, 60, 4,
    )  # fmt: skip
    as_message = task_pb2.RetryPolicy(backoff=task_pb2.BACKOFF_FIXED)
    assert job_request({"noop": {}}, retry=as_message).retry == as_message  # any task's retry can be overridden
    timed = job_request(kind="x", retry={"backoff": "BACKOFF_EXPONENTIAL", "base": dt.timedelta(seconds=2)})
    assert (timed.retry.backoff, timed.retry.base.seconds) == (task_pb2.BACKOFF_EXPONENTIAL, 2)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({}, TypeError, "give a job request, or kind="),
        ({"request": {"noop": {}}, "kind": "chat"}, ValueError, "already has a task"),
        ({"request": {"noop": {}}, "input": {"a": 1}}, ValueError, "input= goes with kind="),
        ({"kind": "chat", "input": {"a": object()}}, ValueError, "a kind's input must be JSON"),
        ({"kind": "chat", "input": ["not", "an", "object"]}, TypeError, "a dict or a pydantic model"),
        ({"kind": "chat", "retry": {"backoff": "linear"}}, ValueError, "'exponential' or 'fixed'"),
        ({"kind": "chat", "retry": {"base": "soon"}}, ValueError, "retry base: not a duration"),
        ({"kind": "chat", "retry": {"base": -1}}, ValueError, "must not be negative"),
        ({"kind": "chat", "retry": {"attempts": 0}}, ValueError, "at least 1"),
        ({"kind": "chat", "retry": {"jitter": 0.1}}, ValueError, "unknown setting 'jitter'"),
        ({"kind": "chat", "priority": "urgent"}, ValueError, "unknown priority 'urgent'"),
    ],
)
def test_bad_kind_requests_are_refused_before_any_call(
    args: dict[str, Any], error: type[Exception], match: str
) -> None:
    from conveyor_client import job_request

    with pytest.raises(error, match=match):
        job_request(**args)


def test_job_output_is_plain_python() -> None:
    from google.protobuf import json_format

    from conveyor_client import job_output

    job = job_pb2.Job(id="j", kind="wordcount", state=job_pb2.JOB_STATE_COMPLETED)
    assert job_output(job) is None  # no output (yet): None, not {}
    json_format.ParseDict({"words": 19, "top": [{"word": "the", "count": 4}], "ratio": 0.25, "big": 2.0**60,
                           "none": None, "ok": True}, job.result.output)
    out = job_output(job)
    assert out == {"words": 19, "top": [{"word": "the", "count": 4}], "ratio": 0.25, "big": 2.0**60,
                   "none": None, "ok": True}  # fmt: skip
    assert type(out["words"]) is int and type(out["ratio"]) is float and type(out["big"]) is float
    scalar = job_pb2.JobResult()
    scalar.output.string_value = "done"
    assert job_output(scalar) == "done"  # any JSON value, not only objects


async def test_kinds_through_the_async_client(kind_fake: KindFake) -> None:
    from google.protobuf import json_format

    from conveyor_client import job_output

    async with AsyncConveyorClient(kind_fake.target) as client:
        submitted = await client.submit(kind="chat", input=CHAT_INPUT, queue="agents", retry={"attempts": 2})
        assert submitted.id == "job-1"
        job = await client.get("kind-1")
        assert (job.kind, job.WhichOneof("task")) == ("chat", "kind_task")
        assert job_output(job) == {"reply": {"role": "assistant", "content": "hi"}, "turns": 1, "score": 0.5,
                                   "tags": ["a", None, True]}  # fmt: skip
        listed = [j.id async for j in client.list(queue="agents", kind="chat", limit=2)]
        assert listed == ["j0", "j1"]
        assert await client.kinds() == {"browser": 1, "chat": 2, "crawl": 1, "noop": 3, "wordcount": 1}
        assert await client.retry_failed("agents", 100, priority="low", max_attempts=1) == 2
        assert await client.retry_failed("agents") == 2
    [sent] = kind_fake.jobs.submitted
    assert (sent.queue, sent.kind.name, sent.max_attempts) == ("agents", "chat", 2)
    assert json_format.MessageToDict(sent.kind.input)["messages"][0]["content"] == "what is 6 * 7?"
    assert [(r.queue, r.kind) for r in kind_fake.jobs.list_requests] == [("agents", "chat")]
    overridden, plain_retry = kind_fake.queues.requests
    assert (overridden.limit, overridden.priority, overridden.max_attempts) == (100, job_pb2.PRIORITY_LOW, 1)
    assert (plain_retry.priority, plain_retry.max_attempts) == (job_pb2.PRIORITY_UNSPECIFIED, 0)


async def test_kinds_through_the_sync_client(kind_fake: KindFake) -> None:
    from conveyor_client import job_output

    def use() -> None:
        with ConveyorClient(kind_fake.target) as client:
            assert client.submit(kind="wordcount", input={"texts": ["a b a"]}, priority="PRIORITY_BULK").id == "job-1"
            assert job_output(client.get("kind-1"))["turns"] == 1
            assert [j.id for j in client.list(queue="q", kind="wordcount", limit=1)] == ["j0"]
            assert client.kinds()["chat"] == 2
            assert client.retry_failed("q", priority=job_pb2.PRIORITY_LOW, max_attempts=3) == 2

    await asyncio.to_thread(use)
    [sent] = kind_fake.jobs.submitted
    assert (sent.kind.name, sent.priority) == ("wordcount", job_pb2.PRIORITY_BULK)
    assert kind_fake.jobs.list_requests[0].kind == "wordcount"
    assert kind_fake.queues.requests[0].max_attempts == 3
