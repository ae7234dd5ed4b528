"""The built-in `browser` kind: a list of typed steps run in a fresh context of the
executor's browser pool (executor/browser/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.kinds import Kind, default_registry
from conveyor.v1 import job_pb2, task_pb2

if TYPE_CHECKING:
    from executor.kind_context import ExecutorJobContext


async def run_browser(ctx: ExecutorJobContext, task: task_pb2.BrowserTask) -> job_pb2.JobResult:
    return await ctx.run_browser_task(task)


default_registry.add(Kind("browser", run_browser, typed=True, browser=True,
                          description="Typed browser steps in a fresh context of the browser pool."))
