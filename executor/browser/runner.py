"""Runs a browser task: its steps in order, in a fresh context from the pool.

Each step runs against its own deadline and races two signals -- the browser died
(retryable BROWSER_CRASHED) and the URL policy refused a navigation of the job's page
(non-retryable URL_POLICY_VIOLATION; a host that does not resolve is a retryable
HOST_NOT_RESOLVED instead). A failing step fails the job with a JobError
that names the step (index and name), its action and selector, and why. Cancelling
the task that runs `run()` cancels the step and closes the context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from google.protobuf import duration_pb2
from google.rpc import code_pb2, status_pb2
from playwright.async_api import Error as PlaywrightError

from conveyor import tracing
from conveyor.artifacts import ArtifactStore
from conveyor.browser_steps import SOFT_STEPS
from conveyor.kinds.errors import JobError
from conveyor.settings import Settings
from conveyor.v1 import job_pb2, task_pb2
from executor.browser import context_options
from executor.browser.page_control import JobPages
from executor.browser.pool import BrowserPool
from executor.browser.recording import failure_details
from executor.browser.session import BrowserSession
from executor.browser.step_context import JobOutputs, StepContext
from executor.browser.step_errors import (
    HARD_REASONS,
    StepFailure,
    after_soft_failures,
    classify_playwright_error,
    is_closed_error,
    soft_failures_error,
    step_timeout,
)
from executor.browser.steps import (
    ACTIONS,
    action_of,
    display_name,
    selectors_of_target,
    target_text,
    targets_of,
    timeout_seconds,
)
from executor.browser.storage_sessions import JobExtras, SessionAccess
from executor.browser.targets import check_selector
from executor.browser.timing import BACKSTOP_GRACE_SECONDS, Deadline
from executor.browser.uploads import UploadStager, check_files, sweep_staging

log = structlog.get_logger()

Report = Callable[[int, str, int, str], Awaitable[None]]
# After an error that looks like the browser going away, how long to wait to hear it.
CRASH_VERDICT_WAIT_SECONDS = 1.0


#: Selectors Playwright parsed before, in this process: whether one parses depends on
#: its text and Playwright's engines only (none are registered here), not on the page,
#: so a job whose selectors all parsed before skips the up-front check's round trip.
_PARSED_SELECTORS: set[str] = set()
MAX_PARSED_SELECTORS = 10_000


def _remember_parsed(selector: str) -> None:
    if len(_PARSED_SELECTORS) >= MAX_PARSED_SELECTORS:
        _PARSED_SELECTORS.clear()
    _PARSED_SELECTORS.add(selector)


class BrowserTaskFailed(JobError):
    """A JobError that also carries what the task produced before it failed."""

    def __init__(self, error: JobError, result: job_pb2.JobResult) -> None:
        super().__init__(
            error.message,
            code=error.code,
            reason=error.reason,
            retryable=error.retryable,
            metadata=error.metadata,
        )
        self.result = result

    def to_status(self) -> status_pb2.Status:
        # The partial result (steps, artifacts such as a kept trace, console) rides along.
        status = super().to_status()
        status.details.append(failure_details(self.result))
        return status


def _task_error(detail: str, reason: str = "INVALID_TASK") -> JobError:
    return JobError(detail, code=code_pb2.INVALID_ARGUMENT, reason=reason, retryable=False)


class BrowserTaskRunner:
    def __init__(
        self,
        pool: BrowserPool,
        artifacts: ArtifactStore,
        settings: Settings,
        *,
        staging_root: Path | None = None,
    ) -> None:
        self.pool = pool
        self.artifacts = artifacts
        self.settings = settings
        self.staging_root = (staging_root or Path(settings.data_dir) / "staging").resolve()
        self.sessions = SessionAccess(settings)  # sessions and recording: storage_sessions.py
        removed = sweep_staging(self.staging_root)
        if removed:
            log.info("upload_staging_leftovers_removed", count=len(removed))

    async def run(
        self, job_id: str, task: task_pb2.BrowserTask, report: Report
    ) -> job_pb2.JobResult:
        steps = list(task.steps)
        try:
            files = self._check_task(steps, task)
        except JobError as error:
            raise BrowserTaskFailed(error, job_pb2.JobResult()) from None
        stager = UploadStager(files, self.staging_root, job_id)
        outputs = JobOutputs(job_id, self.artifacts, self.settings.max_artifact_bytes, stager)
        started = time.monotonic()
        marks: dict[str, float] = {}
        try:
            extras = await JobExtras.prepare(self.sessions, self.settings, job_id, task)
            report = extras.wrap(report)
            async with self.pool.context(context_options.new_context_options(task)) as session:
                marks["context"] = time.monotonic()
                session.guard.watch_page(session.page)
                try:
                    await extras.start(session)
                    # Task-level context options, the job's pages (popups, dialogs).
                    outputs.pages = JobPages(session.context, session.page, session.guard)
                    outputs.test_id_attribute = context_options.test_id_attribute(task)
                    await context_options.apply(session.context, task)
                    await self._check_selectors(session, outputs, steps)
                    marks["setup"] = time.monotonic()
                    for index, step in enumerate(steps):
                        with tracing.step(index, step, display_name):  # its span, when tracing is on
                            await self._run_step(session, outputs, index, step, len(steps), report)
                    if session.guard.violation is not None:
                        raise session.guard.violation
                    if outputs.soft_failures:
                        raise soft_failures_error(outputs.soft_failures)
                    marks["steps"] = time.monotonic()
                    await extras.save(session, outputs)
                except BaseException as exc:
                    extras.failed, extras.cancelled = True, isinstance(exc, asyncio.CancelledError)
                    raise
                finally:
                    outputs.result.blocked_urls.extend(session.guard.blocked_urls)
                    await extras.finish(session, outputs)
                    marks["finish"] = time.monotonic()
        except JobError as error:
            log.info("browser_task_failed", job_id=job_id, reason=error.reason,
                     retryable=error.retryable, error=error.message[:300])
            if isinstance(error, BrowserTaskFailed):
                raise
            raise BrowserTaskFailed(error, outputs.result) from error
        finally:
            await stager.cleanup()
        ended = time.monotonic()
        log.info("browser_task_completed", job_id=job_id, steps=len(steps),
                 seconds=round(ended - started, 3), phases_ms=_phases_ms(started, marks, ended))
        return outputs.result

    def _check_task(
        self, steps: list[task_pb2.Step], task: task_pb2.BrowserTask
    ) -> dict[str, task_pb2.File]:
        if not steps:
            raise _task_error("a browser task needs at least one step")
        if len(steps) > self.settings.max_steps:
            raise _task_error(
                f"the task has {len(steps)} steps, more than the limit of {self.settings.max_steps}",
                "TOO_MANY_STEPS",
            )
        try:
            return check_files(list(task.files), self.settings.max_file_bytes)
        except StepFailure as failure:
            raise JobError(failure.detail, code=failure.code, reason=failure.reason,
                           retryable=False) from None

    # --- steps ------------------------------------------------------------------------------

    async def _run_step(
        self,
        session: BrowserSession,
        outputs: JobOutputs,
        index: int,
        step: task_pb2.Step,
        total: int,
        report: Report,
    ) -> None:
        name = display_name(step)
        action: str = step.WhichOneof("action") or ""
        timeout = timeout_seconds(step, self.settings.default_step_timeout_seconds)
        ctx = StepContext(
            outputs.page(session.page), session.guard, outputs, index, name, action, Deadline(timeout),
            pages=outputs.pages, test_id_attribute=outputs.test_id_attribute,
        )
        await report(index * 100 // total, f"step {index + 1}/{total}: {name}", index, name)
        started = time.monotonic()
        outcome = job_pb2.StepResult(index=index, name=name, action=action)
        session.guard.clear_unresolved()
        try:
            _, message = action_of(step)
            await self._race(session, ACTIONS[action](ctx, message), timeout)
        except (StepFailure, JobError, PlaywrightError, TimeoutError) as exc:
            error = await self._step_error(exc, ctx, session)
            outcome.status = job_pb2.STEP_STATUS_FAILED
            outcome.error = error.message
            _finish(outcome, started, ctx)
            outputs.result.steps.append(outcome)
            if step.soft and action in SOFT_STEPS and error.reason not in HARD_REASONS:
                tracing.step_failed(error.reason, error.message)
                outputs.soft_failures.append(error)  # recorded; the job goes on
                return
            error = after_soft_failures(error, outputs.soft_failures)
            raise BrowserTaskFailed(error, outputs.result) from None
        outcome.status = job_pb2.STEP_STATUS_OK
        _finish(outcome, started, ctx)
        outputs.result.steps.append(outcome)
        await report((index + 1) * 100 // total, f"step {index + 1}/{total} done: {name}",
                     index, name)

    async def _check_selectors(
        self, session: BrowserSession, outputs: JobOutputs, steps: list[task_pb2.Step]
    ) -> None:
        """Fail fast, before acting, on a selector Playwright cannot parse. Every
        distinct selector is checked at once (one round trip to the browser, not one
        each); the first bad one in step order is the one reported."""
        timeout = self.settings.default_step_timeout_seconds
        first_use: dict[str, StepContext] = {}
        for index, step in enumerate(steps):
            action = step.WhichOneof("action")
            if action is None:
                continue
            for target in targets_of(getattr(step, action)):
                unchecked = [s for s in selectors_of_target(target)
                             if s not in _PARSED_SELECTORS and s not in first_use]
                if not unchecked:
                    continue
                ctx = StepContext(session.page, session.guard, outputs, index, display_name(step),
                                  action, Deadline(timeout), selector=target_text(target),
                                  structured=target.HasField("locator"))
                for selector in unchecked:
                    first_use.setdefault(selector, ctx)
        if not first_use:
            return  # every one parsed before (in this process): no round trip
        outcomes: list[BaseException | None] = []

        async def check_all() -> None:
            outcomes.extend(await asyncio.gather(
                *(check_selector(session.page, selector) for selector in first_use), return_exceptions=True
            ))

        try:
            await self._race(session, check_all(), timeout)
        except (StepFailure, JobError, PlaywrightError, TimeoutError) as exc:
            raise await self._step_error(exc, next(iter(first_use.values())), session) from None
        for (selector, ctx), outcome in zip(first_use.items(), outcomes, strict=True):
            if isinstance(outcome, (StepFailure, JobError, PlaywrightError, TimeoutError)):
                raise await self._step_error(outcome, ctx, session) from None
            if isinstance(outcome, BaseException):
                raise outcome
            _remember_parsed(selector)

    async def _race(
        self, session: BrowserSession, work: Coroutine[Any, Any, None], timeout: float
    ) -> None:
        """Run a step, failing it at once if the browser dies or the policy refuses a
        navigation of the page meanwhile."""
        step = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(session.lost.wait())
        violated = asyncio.ensure_future(session.guard.violated.wait())
        try:
            done, _ = await asyncio.wait(
                {step, lost, violated},
                timeout=timeout + BACKSTOP_GRACE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (step, lost, violated):
                task.cancel()
            await asyncio.gather(step, lost, violated, return_exceptions=True)
        if session.guard.violation is not None:
            raise session.guard.violation
        if session.lost.is_set():
            raise session.crash_error()
        if step not in done:
            raise TimeoutError
        step.result()

    async def _step_error(
        self, exc: BaseException, ctx: StepContext, session: BrowserSession
    ) -> JobError:
        await session.guard.await_verdict_for(exc)
        if is_closed_error(exc) and not session.lost.is_set():
            # The browser's "disconnected" event may trail the failed call.
            try:
                async with asyncio.timeout(CRASH_VERDICT_WAIT_SECONDS):
                    await session.lost.wait()
            except TimeoutError:
                pass
        if session.guard.violation is not None:
            exc = session.guard.violation
        elif session.lost.is_set() or is_closed_error(exc):
            exc = session.crash_error()
        unresolved = session.guard.unresolved_navigation
        if unresolved is not None and isinstance(exc, PlaywrightError) and "net::ERR_" in str(exc):
            # The page's navigation failed because its host (a redirect hop's, say,
            # which only the proxy sees) did not resolve: say so, and which host.
            exc = unresolved
        if isinstance(exc, JobError):
            return _with_step(ctx, exc.reason, exc.message, exc.code, exc.retryable, exc.metadata)
        if isinstance(exc, StepFailure):
            failure = exc
        elif isinstance(exc, PlaywrightError):
            failure = classify_playwright_error(
                exc, action=ctx.action, selector=ctx.selector, timeout_s=ctx.deadline.total
            )
        else:
            failure = step_timeout(ctx.deadline.total, "the step did not finish")
        return _with_step(
            ctx, failure.reason, failure.detail, failure.code, failure.retryable, failure.metadata
        )


def _with_step(
    ctx: StepContext,
    reason: str,
    detail: str,
    code: int,
    retryable: bool,
    metadata: dict[str, str],
) -> JobError:
    where = ctx.where()
    message = f"steps[{ctx.index}] {ctx.name!r} ({where}): {detail}"
    info = {
        **metadata,
        "step_index": str(ctx.index),
        "step_name": ctx.name,
        "action": ctx.action,
        "selector": ctx.selector,
    }
    if ctx.matched_selector:
        info["matched_selector"] = ctx.matched_selector
    return JobError(message, code=code, reason=reason, retryable=retryable, metadata=info)


def _phases_ms(started: float, marks: dict[str, float], ended: float) -> dict[str, int]:
    """Where a job's time went, in ms: waiting for and opening its context, the set-up
    before the first step, the steps, the recorders' end, closing the context."""
    out: dict[str, int] = {}
    before = started
    for name in ("context", "setup", "steps", "finish"):
        if name in marks:
            out[name] = round((marks[name] - before) * 1000)
            before = marks[name]
    out["close"] = round((ended - before) * 1000)
    return out


def _finish(outcome: job_pb2.StepResult, started: float, ctx: StepContext) -> None:
    outcome.duration.CopyFrom(_duration(time.monotonic() - started))
    outcome.matched_selector = ctx.matched_selector


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration
