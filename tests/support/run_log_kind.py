"""A job kind that writes down every run of its handler: one line `job_id attempt pid`
appended to the file named by CONVEYOR_TEST_RUN_LOG, before it sleeps a little. Tests
that kill services (tests/test_scale_out.py) read it to tell a job that ran twice from
one that was re-run because its runner died. Loaded by CONVEYOR_KINDS=tests.support.run_log_kind."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.kinds import JobContext, Retry, job_kind

RUN_LOG_ENV = "CONVEYOR_TEST_RUN_LOG"


class RunLogInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleep: float = 0.1


@job_kind("run-log", input=RunLogInput, retry=Retry(attempts=5, base="0.2s", max="1s"))
async def run_log(ctx: JobContext, input: RunLogInput) -> dict[str, Any]:
    """Appends `job_id attempt pid` to the run log, then sleeps `sleep` seconds."""
    line = f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ[RUN_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of one short line: whole, even with many writers
    finally:
        os.close(fd)
    await asyncio.sleep(input.sleep)
    return {"pid": os.getpid()}
