"""A user-defined no-op kind for bench/kinds.py: the registry, JSON input and output,
and the kind runner's path, doing nothing else (loaded by CONVEYOR_KINDS=bench.noop_kind)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.kinds import JobContext, job_kind


class NoopInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = 0


@job_kind("bench-noop", input=NoopInput)
async def bench_noop(ctx: JobContext, input: NoopInput) -> dict[str, Any]:
    """Does nothing; returns its input's number."""
    return {"n": input.n}
