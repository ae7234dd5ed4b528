"""requestId: one request, one job, for 24 h, whatever happens to the job; a request id
sent with another request is refused, never answered with the first job."""

from __future__ import annotations

import uuid

import grpc
import pytest

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import error_info, submit_request, unique_queue, wait_state

pb, qpb = job_service_pb2, queue_service_pb2


async def test_a_repeat_answers_with_its_job_after_the_job_was_cleaned_away(
    jobs: JobServiceStub, queues: QueueServiceStub
) -> None:
    """A client retrying a submit whose reply it lost, after the job ended and was
    deleted (CleanQueue here; retention deletes the same way), gets the job it made,
    in its final state, and no second job."""
    q = unique_queue("reqid")
    body = {"queue": q, "requestId": f"order-{uuid.uuid4().hex}", "noop": {}}
    first = await jobs.SubmitJob(submit_request(body))
    await wait_state(jobs, first.id, {job_pb2.JOB_STATE_COMPLETED})
    cleaned = await queues.CleanQueue(qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED))
    assert cleaned.deleted == 1
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await jobs.GetJob(pb.GetJobRequest(id=first.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    again = await jobs.SubmitJob(submit_request(body))
    assert (again.id, again.existing, again.state) == (first.id, True, job_pb2.JOB_STATE_COMPLETED)
    batch = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[submit_request(body)]))
    assert not batch.errors and (batch.results[0].id, batch.results[0].existing) == (first.id, True)
    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=q))
    assert [j.id for j in listed.jobs] == []


async def test_a_request_id_sent_with_another_request_is_refused(jobs: JobServiceStub) -> None:
    q = unique_queue("reqid")
    request_id = f"order-{uuid.uuid4().hex}"
    first = await jobs.SubmitJob(submit_request({"queue": q, "requestId": request_id, "delay": "60s", "noop": {}}))
    for other in (
        {"queue": q, "requestId": request_id, "delay": "60s", "noop": {"sleep": "1s"}},
        {"queue": q, "requestId": request_id, "delay": "60s", "priority": "PRIORITY_HIGH", "noop": {}},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await jobs.SubmitJob(submit_request(other))
        assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        info = error_info(reused.value)
        assert info.reason == "REQUEST_ID_REUSED"
        assert dict(info.metadata) == {"existing_job_id": first.id, "request_id": request_id}
    partial = await jobs.SubmitJobs(pb.SubmitJobsRequest(allow_partial=True, requests=[
        submit_request({"queue": q, "noop": {}}),
        submit_request({"queue": q, "requestId": request_id, "noop": {"sleep": "2s"}}),
    ]))
    assert [e.index for e in partial.errors] == [1]
    assert partial.errors[0].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    # Nothing was made under the request id but the first job.
    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=q))
    assert sorted(j.id for j in listed.jobs) == sorted([first.id, partial.results[0].id])
    await jobs.CancelJob(pb.CancelJobRequest(id=first.id))


async def test_a_repeat_is_the_same_request_whatever_the_order_of_its_labels(jobs: JobServiceStub) -> None:
    q = unique_queue("reqid")
    request_id = f"order-{uuid.uuid4().hex}"
    labels = {f"k{i}": str(i) for i in range(8)}
    first = await jobs.SubmitJob(
        submit_request({"queue": q, "requestId": request_id, "delay": "60s", "labels": labels, "noop": {}})
    )
    reordered = dict(reversed(list(labels.items())))
    again = await jobs.SubmitJob(
        submit_request({"queue": q, "requestId": request_id, "delay": "60s", "labels": reordered, "noop": {}})
    )
    assert (again.id, again.existing) == (first.id, True)
    await jobs.CancelJob(pb.CancelJobRequest(id=first.id))
