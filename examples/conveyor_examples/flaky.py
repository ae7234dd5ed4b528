"""`flaky`: an async kind that fails as it is told, to see retry policies at work.

    {"kind": {"name": "flaky", "input": {"fail_first": 2}}}      two retryable failures, then done
    {"kind": {"name": "flaky", "input": {"permanent": true}}}    fails for good at once
    {"kind": {"name": "flaky", "input": {"fail_first": 1, "error": "crash"}}}
                                                                 any other exception: retried too

Its own retry policy is 4 attempts, exponential from 0.2 s (0.2, 0.4, 0.8 s); a job
may override it (`maxAttempts`, `retry`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.kinds import JobContext, PermanentError, Retry, RetryableError, job_kind


class FlakyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_first: int = Field(default=1, ge=0, le=100, description="Attempts that fail first.")
    error: Literal["retryable", "crash"] = Field(
        default="retryable", description="How they fail: a RetryableError, or a plain exception (a crash)."
    )
    permanent: bool = Field(default=False, description="Fail for good (a PermanentError) on the first attempt.")
    sleep: float = Field(default=0.0, ge=0, le=3600, description="Seconds each attempt works before its outcome.")


class FlakyCrash(RuntimeError):
    """What `"error": "crash"` raises: an exception the kind did not classify."""


@job_kind("flaky", input=FlakyInput, retry=Retry(attempts=4, backoff="exponential", base="0.2s", max="2s"))
async def flaky(ctx: JobContext, input: FlakyInput) -> dict[str, Any]:
    """Fail the first `fail_first` attempts (retryably), or for good when `permanent`."""
    await ctx.progress(10, f"attempt {ctx.attempt}")
    if input.sleep:
        await asyncio.sleep(input.sleep)
    if input.permanent:
        raise PermanentError("flaky: failing for good, as asked", reason="FLAKY_PERMANENT")
    if ctx.attempt <= input.fail_first:
        text = f"flaky: failing attempt {ctx.attempt} of the first {input.fail_first}, as asked"
        if input.error == "crash":
            raise FlakyCrash(text)
        raise RetryableError(text, reason="FLAKY_RETRYABLE")
    await ctx.progress(100, f"succeeded on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt, "failed_before": ctx.attempt - 1}
