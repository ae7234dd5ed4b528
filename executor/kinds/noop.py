"""The built-in `noop` kind: sleeps, and fails its first N attempts (retryably). For
health probes, tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from google.rpc import code_pb2

from conveyor.kinds import JobError, Kind, default_registry
from conveyor.v1 import job_pb2, task_pb2


async def run_noop(ctx: Any, task: task_pb2.NoopTask) -> job_pb2.JobResult:
    if ctx.attempt <= task.fail_first_attempts:
        raise JobError(
            f"noop: failing attempt {ctx.attempt} of the first {task.fail_first_attempts} as asked",
            code=code_pb2.UNAVAILABLE,
            reason="NOOP_INJECTED_FAILURE",
            retryable=True,
        )
    seconds = task.sleep.seconds + task.sleep.nanos / 1e9
    if seconds > 0:
        await asyncio.sleep(seconds)
    return job_pb2.JobResult()


default_registry.add(Kind("noop", run_noop, typed=True, description="Does nothing but wait."))
