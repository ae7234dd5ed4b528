"""The built-in no-op task: sleeps, and fails its first N attempts (retryably)."""

from __future__ import annotations

import asyncio

from google.rpc import code_pb2

from conveyor.v1 import job_pb2, task_pb2
from executor.errors import JobError


async def run_noop(task: task_pb2.NoopTask, attempt: int) -> job_pb2.JobResult:
    if attempt <= task.fail_first_attempts:
        raise JobError(
            f"noop: failing attempt {attempt} of the first {task.fail_first_attempts} as asked",
            code=code_pb2.UNAVAILABLE,
            reason="NOOP_INJECTED_FAILURE",
            retryable=True,
        )
    seconds = task.sleep.seconds + task.sleep.nanos / 1e9
    if seconds > 0:
        await asyncio.sleep(seconds)
    return job_pb2.JobResult()
