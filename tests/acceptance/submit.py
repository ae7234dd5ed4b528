"""Submits the acceptance suite's jobs to a running gateway (one SubmitJobs) and waits
for each to end: used by test_acceptance.py and bench/browser.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format

from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub

TERMINAL = {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def submit_request(body: dict[str, Any], *, max_attempts: int = 1) -> job_service_pb2.SubmitJobRequest:
    """A job body of conveyor_suite as a SubmitJobRequest; one attempt (a test's
    failure is an outcome, not something to retry)."""
    request = json_format.ParseDict(body, job_service_pb2.SubmitJobRequest())
    request.max_attempts = max_attempts
    return request


async def run_jobs(
    target: str, bodies: list[dict[str, Any]], *, timeout: float = 300.0, queue: str = ""
) -> tuple[list[job_pb2.Job], float]:
    """Submit every body in one SubmitJobs and wait for all; (the jobs in order, the
    seconds from the submit to the last one's end)."""
    requests = [submit_request(body) for body in bodies]
    for request in requests:
        if queue:
            request.queue = queue
    async with grpc.aio.insecure_channel(target) as channel:
        stub = JobServiceStub(channel)
        started = time.perf_counter()
        reply = await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=requests))
        ids = [r.id for r in reply.results]
        ended: dict[str, float] = {}

        async def wait(job_id: str) -> job_pb2.Job:
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not end within {timeout:g}s")
                wait_for = duration_pb2.Duration(seconds=int(min(left, 20)) or 1)
                reply: job_service_pb2.WaitJobResponse = await stub.WaitJob(
                    job_service_pb2.WaitJobRequest(id=job_id, timeout=wait_for)
                )
                job = reply.job
                if job.state in TERMINAL:
                    ended[job_id] = time.perf_counter()
                    return job

        jobs = await asyncio.gather(*(wait(job_id) for job_id in ids))
    return list(jobs), max(ended.values()) - started


def run_jobs_sync(target: str, bodies: list[dict[str, Any]], **kwargs: Any) -> tuple[list[job_pb2.Job], float]:
    return asyncio.run(run_jobs(target, bodies, **kwargs))
