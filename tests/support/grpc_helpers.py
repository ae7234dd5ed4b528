"""Small helpers for tests that talk to the gateway over real gRPC."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

TERMINAL: set[job_pb2.JobState.ValueType] = {
    job_pb2.JOB_STATE_COMPLETED,
    job_pb2.JOB_STATE_FAILED,
    job_pb2.JOB_STATE_CANCELLED,
}


def unique_queue(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit_request(body: dict[str, Any]) -> job_service_pb2.SubmitJobRequest:
    """A SubmitJobRequest from its protobuf JSON mapping, as grpcurl would send it."""
    return json_format.ParseDict(body, job_service_pb2.SubmitJobRequest())


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status on {err.code()}: {err.details()}"
    return status


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    out: dict[str, str] = {}
    for detail in rich_status(err).details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br):
            out.update({v.field: v.description for v in br.field_violations})
    return out


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for detail in rich_status(err).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the status details")


async def watch_all(
    jobs: job_service_pb2_grpc.JobServiceStub, job_id: str, *, timeout: float = 30, **kw: Any
) -> list[job_service_pb2.WatchJobResponse]:
    """Every message of a WatchJob stream until it ends (OK), bounded by `timeout`."""
    out: list[job_service_pb2.WatchJobResponse] = []

    async def collect() -> None:
        async for msg in jobs.WatchJob(job_service_pb2.WatchJobRequest(id=job_id, **kw)):
            out.append(msg)

    await asyncio.wait_for(collect(), timeout)
    return out


async def wait_state(
    jobs: job_service_pb2_grpc.JobServiceStub, job_id: str, states: set[job_pb2.JobState.ValueType], timeout: float = 30
) -> job_pb2.Job:
    """Follow the job's events until one shows it in one of `states`; returns the job
    as GetJob answers right after (it may have moved on since)."""

    async def follow() -> job_pb2.Job:
        async for msg in jobs.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
            kind = msg.WhichOneof("kind")
            state = msg.job.state if kind == "job" else msg.event.state if kind == "event" else None
            if state in states:
                job: job_pb2.Job = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=job_id))).job
                return job
        final = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=job_id))).job
        raise AssertionError(f"job ended {job_pb2.JobState.Name(final.state)} without reaching {states}")

    return await asyncio.wait_for(follow(), timeout)
