"""Removes what the store cannot: the artifacts of deleted jobs (retention, CleanQueue).
The store's Lua lists deleted job ids; every gateway takes from that list."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.exceptions import RedisError

from conveyor.artifacts import ArtifactStore
from conveyor.store.job_store import JobStore

log = structlog.get_logger("gateway.janitor")

INTERVAL_SECONDS = 5.0


class Janitor:
    def __init__(self, store: JobStore, artifacts: ArtifactStore) -> None:
        self._store = store
        self._artifacts = artifacts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.removed = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTERVAL_SECONDS)
            self._wake.clear()
            try:
                while ids := await self._store.take_deleted(100):
                    for job_id in ids:
                        await self._artifacts.delete_job(job_id)
                    self.removed += len(ids)
            except (RedisError, OSError) as exc:
                log.warning("janitor could not remove artifacts", error=str(exc))
