"""WatchQueue on a queue that has had no job yet: a dashboard started before the first
submit watches it from sequence 0 and sees the first job's events, without polling."""

from __future__ import annotations

import asyncio

from conveyor.v1 import job_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue

qpb = queue_service_pb2


async def test_a_queue_with_no_job_yet_is_watched_from_its_start(
    jobs: JobServiceStub, queues: QueueServiceStub
) -> None:
    q = unique_queue("fresh")
    stream = queues.WatchQueue(qpb.WatchQueueRequest(queue=q))
    seen: list[job_pb2.JobEvent] = []

    async def follow() -> None:
        async for msg in stream:
            if msg.WhichOneof("kind") == "event":
                seen.append(msg.event)
                if msg.event.state == job_pb2.JOB_STATE_COMPLETED:
                    return

    watcher = asyncio.create_task(follow())
    # The gateway sends the stream's headers once it follows the queue (a refusal
    # would end the call instead).
    await asyncio.wait_for(stream.initial_metadata(), 10)
    assert not stream.done(), stream.code()
    sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    await asyncio.wait_for(watcher, 20)
    assert [e.queue_sequence for e in seen] == list(range(1, len(seen) + 1))
    assert {e.job_id for e in seen} == {sub.id}
    assert [e.state for e in seen if e.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED] == [
        job_pb2.JOB_STATE_WAITING, job_pb2.JOB_STATE_ACTIVE, job_pb2.JOB_STATE_COMPLETED,
    ]
