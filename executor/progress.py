"""A running attempt's progress reports, sent to the store in order, in the background:
the job does not wait for each round trip (a browser job reports before every step),
and the attempt's end waits for the last one, so every progress event comes before the
terminal event. A report that fails (Redis away for a moment) is logged and dropped:
progress is informative, the attempt's end is what counts."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.exceptions import RedisError

from conveyor.store.job_store import JobStore

log = structlog.get_logger("executor.progress")


class ProgressSender:
    def __init__(self, store: JobStore, job_id: str, attempt: int) -> None:
        self._store = store
        self._job_id, self._attempt = job_id, attempt
        self._last: asyncio.Task[None] | None = None

    async def report(self, progress: int, message: str, step_index: int, step_name: str) -> None:
        """Queue a report; returns at once."""
        self._last = asyncio.create_task(self._send(self._last, progress, message, step_index, step_name))

    async def _send(
        self, before: asyncio.Task[None] | None, progress: int, message: str, step_index: int, step_name: str
    ) -> None:
        if before is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await before
        try:
            await self._store.report_progress(self._job_id, self._attempt, progress, message, step_index, step_name)
        except (RedisError, OSError) as exc:
            log.warning("progress not reported", error=str(exc), progress=progress)

    async def drain(self) -> None:
        """Wait until every report queued so far is sent."""
        if self._last is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._last)

    def close(self) -> None:
        """Drop what is still unsent (the attempt was stopped)."""
        if self._last is not None and not self._last.done():
            self._last.cancel()
