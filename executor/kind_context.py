"""The executor's JobContext: what a kind's handler is given besides its input (see
conveyor/kinds/api.py for the protocol), and its blocking twin for plain `def`
handlers, whose calls hop to the event loop and wait."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from conveyor.artifacts import ArtifactStore
from conveyor.kinds import JobCancelled, Kind, PermanentError
from conveyor.v1 import job_pb2, task_pb2
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskRunner
from executor.browser.url_policy import UrlPolicy
from executor.http_fetch import HttpResponse, fetch

T = TypeVar("T")

#: What a progress report goes to: (percent, message, step index, step name).
Report = Callable[[int, str, int, str], Awaitable[None]]
_LABEL = re.compile(r"[^a-z0-9-]+")
_EXTENSIONS = {"application/json": "json", "text/plain": "txt", "text/html": "html", "text/csv": "csv",
               "image/png": "png", "image/jpeg": "jpg", "application/pdf": "pdf"}


@dataclass
class ExecutorServices:
    """What the executor lends to the jobs it runs."""

    artifacts: ArtifactStore
    policy: UrlPolicy
    max_artifact_bytes: int
    pool: BrowserPool | None = None
    browser_runner: BrowserTaskRunner | None = None


@dataclass
class ExecutorJobContext:
    job_id: str
    attempt: int
    queue: str
    labels: Mapping[str, str]
    kind: Kind
    services: ExecutorServices
    report: Report
    log: Any = None
    #: True once the job is cancelled or timed out (blocking handlers poll it from
    #: their thread: a plain attribute, written once by the loop's thread).
    cancel_requested: bool = False
    #: The artifacts saved so far (they go to the job's result).
    artifacts: list[job_pb2.Artifact] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger("job").bind(kind=self.kind.name)

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    async def progress(self, percent: int, message: str = "") -> None:
        await self.report(max(0, min(100, int(percent))), str(message)[:1000], -1, "")

    async def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str:
        if len(data) > self.services.max_artifact_bytes:
            raise PermanentError(f"artifact of {len(data)} bytes; at most {self.services.max_artifact_bytes}",
                                 reason="ARTIFACT_TOO_LARGE")
        # The name is ours: the label's letters, a counter, an extension from the type.
        stem = _LABEL.sub("-", label.lower()).strip("-")[:32] or "file"
        extension = _EXTENSIONS.get(content_type.split(";", 1)[0].strip(), "bin")
        name = f"{stem}-{len(self.artifacts) + 1}.{extension}"
        await self.services.artifacts.put(self.job_id, name, data, content_type)
        self.artifacts.append(job_pb2.Artifact(name=name, content_type=content_type, size_bytes=len(data),
                                               step_index=-1))
        return name

    async def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
                    follow_redirects: bool = True) -> HttpResponse:
        return await fetch(self.services.policy, url, headers=headers, max_bytes=max_bytes,
                           follow_redirects=follow_redirects)

    def browser_page(self) -> AbstractAsyncContextManager[Any]:
        return self._browser_page()

    @asynccontextmanager
    async def _browser_page(self) -> AsyncIterator[Any]:
        pool = self.services.pool
        if pool is None or not self.kind.browser:
            raise PermanentError(f"kind {self.kind.name!r} did not declare browser=True, or this executor "
                                 "runs no browser pool", reason="NO_BROWSER")
        async with pool.context() as session:
            session.guard.watch_page(session.page)
            yield session.page

    async def run_browser_task(self, task: task_pb2.BrowserTask) -> job_pb2.JobResult:
        """The built-in browser kind's steps (executor/browser/runner.py)."""
        runner = self.services.browser_runner
        if runner is None:
            raise PermanentError("this executor runs no browser pool", reason="NO_BROWSER")
        return await runner.run(self.job_id, task, self.report)


class BlockingContext:
    """The context of a blocking handler, called from its own thread: each call runs
    on the event loop and waits for it."""

    def __init__(self, ctx: ExecutorJobContext, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.job_id, self.attempt, self.queue, self.labels = ctx.job_id, ctx.attempt, ctx.queue, ctx.labels
        self.log = ctx.log

    def _call(self, coro: Awaitable[T]) -> T:
        self.check_cancelled()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    @property
    def cancelled(self) -> bool:
        return self._ctx.cancelled

    def check_cancelled(self) -> None:
        if self._ctx.cancelled:
            raise JobCancelled("the job was cancelled")

    def progress(self, percent: int, message: str = "") -> None:
        self._call(self._ctx.progress(percent, message))

    def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str:
        return self._call(self._ctx.save_artifact(data, content_type=content_type, label=label))

    def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
              follow_redirects: bool = True) -> HttpResponse:
        return self._call(self._ctx.fetch(url, headers=headers, max_bytes=max_bytes,
                                          follow_redirects=follow_redirects))
