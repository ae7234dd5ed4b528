"""A browser job's sessions and recording, around its steps (the runner's hooks).

- `session.use`: the owner's saved storage state (cookies, local storage) is set on
  the job's context before its first step (`BrowserContext.set_storage_state`, so a
  spare context opened ahead serves as well as a new one). None of that name for the
  job's owner (or expired) fails the job with SESSION_NOT_FOUND, not retried.
- `session.save`: when every step passed, the context's storage state is saved as
  the owner's session of that name (conveyor/store/session_store.py).
- `recording`: executor/browser/recording.py.

The job's owner (its tenant) and attempt are read from the job's hash, only for a
task that needs them, on a small connection pool of the runner's own."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from google.rpc import code_pb2
from playwright.async_api import Error as PlaywrightError

from conveyor.browser_options import session_ttl_ms
from conveyor.errors import NotFound, ResourceExhausted
from conveyor.kinds.errors import JobError
from conveyor.settings import Settings
from conveyor.store.job_store import connect
from conveyor.store.keys import Keys
from conveyor.store.records import int_of, text_of
from conveyor.store.session_store import SessionStore
from conveyor.v1 import task_pb2
from executor.browser.recording import Recorder, Report
from executor.browser.session import BrowserSession
from executor.browser.step_context import JobOutputs

log = structlog.get_logger()

STATE_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class JobFacts:
    owner: str
    attempt: int
    #: The attempt's number within its set of attempts (RetryJob starts a new set): 2 is the first retry.
    attempt_in_set: int


class SessionAccess:
    """The executor's way to the session store and the job's own facts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: aioredis.Redis | None = None
        self._store: SessionStore | None = None
        self.keys = Keys(settings.key_prefix)

    @property
    def store(self) -> SessionStore:
        if self._store is None:
            self._client = connect(self.settings.effective_redis_url, max_connections=4,
                                   client_name="conveyor-executor-sessions")
            self._store = SessionStore(self._client, self.settings.key_prefix)
        return self._store

    async def facts(self, job_id: str) -> JobFacts:
        values: list[Any] = await self.store.client.hmget(self.keys.job(job_id), ["owner", "attempt", "limit", "max"])
        owner, attempt, limit, per_set = values
        n = int_of(attempt)
        first = int_of(limit) - int_of(per_set) + 1
        return JobFacts(text_of(owner), n, n - first + 1 if int_of(per_set) else n)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _session_error(detail: str, reason: str, code: int, name: str) -> JobError:
    return JobError(detail, code=code, reason=reason, retryable=False, metadata={"session": name})


@dataclass
class JobExtras:
    """One attempt's session and recording work."""

    task: task_pb2.BrowserTask
    job_id: str
    access: SessionAccess
    facts: JobFacts | None = None
    state: dict[str, Any] | None = None
    recorder: Recorder | None = None
    failed: bool = False
    cancelled: bool = False
    _started: list[str] = field(default_factory=list)

    @classmethod
    async def prepare(
        cls, access: SessionAccess, settings: Settings, job_id: str, task: task_pb2.BrowserTask
    ) -> JobExtras:
        """Before the context is taken: the owner's session to start from, the recorder."""
        extras = cls(task, job_id, access)
        rec = task.recording
        wants_recording = rec.trace not in (task_pb2.TRACE_MODE_UNSPECIFIED, task_pb2.TRACE_MODE_OFF) \
            or rec.video or rec.har
        scratch = Path(settings.data_dir) / "recordings"
        if not (task.session.use or task.session.save or wants_recording):
            # Console messages and page errors are kept for every job; nothing else is asked.
            extras.recorder = Recorder(rec, 1, 1, scratch)
            return extras
        extras.facts = facts = await access.facts(job_id)
        if task.session.use:
            try:
                stored = await access.store.get(facts.owner, task.session.use)
            except NotFound as err:
                raise _session_error(err.message, "SESSION_NOT_FOUND", code_pb2.NOT_FOUND,
                                     task.session.use) from None
            extras.state = stored.state
        extras.recorder = Recorder(rec, facts.attempt, facts.attempt_in_set, scratch)
        return extras

    def wrap(self, report: Report) -> Report:
        return self.recorder.wrap(report) if self.recorder is not None else report

    async def start(self, session: BrowserSession) -> None:
        """On the job's context, before its first step."""
        if self.state is not None:
            try:
                async with asyncio.timeout(STATE_TIMEOUT_SECONDS):
                    await session.context.set_storage_state(self.state)  # type: ignore[arg-type]
            except (PlaywrightError, TimeoutError) as exc:
                raise JobError(f"the session {self.task.session.use!r} could not be set on the context: {exc}",
                               code=code_pb2.UNAVAILABLE, reason="SESSION_NOT_APPLIED", retryable=True,
                               metadata={"session": self.task.session.use}) from None
        if self.recorder is not None:
            await self.recorder.start(session)

    async def save(self, session: BrowserSession, outputs: JobOutputs) -> None:
        """After every step passed: save the context's storage state if asked."""
        name = self.task.session.save
        if not name:
            return
        assert self.facts is not None
        try:
            async with asyncio.timeout(STATE_TIMEOUT_SECONDS):
                state = await session.context.storage_state()
        except (PlaywrightError, TimeoutError) as exc:
            raise JobError(f"the session {name!r} could not be read from the context: {exc}",
                           code=code_pb2.UNAVAILABLE, reason="SESSION_NOT_SAVED", retryable=True,
                           metadata={"session": name}) from None
        try:
            info = await self.access.store.save(self.facts.owner, name, dict(state),
                                                ttl_ms=session_ttl_ms(self.task.session), job_id=self.job_id)
        except ResourceExhausted as err:
            raise _session_error(err.message, err.reason, code_pb2.RESOURCE_EXHAUSTED, name) from None
        outputs.result.saved_session = name
        log.info("session_saved", session=name, size_bytes=info.size_bytes, cookies=info.cookie_count,
                 origins=len(info.origins))

    async def finish(self, session: BrowserSession, outputs: JobOutputs) -> None:
        """Before the context is closed (not when the job was cancelled: it stops at once)."""
        if self.recorder is not None and not self.cancelled:
            await self.recorder.finish(session, outputs, failed=self.failed)
