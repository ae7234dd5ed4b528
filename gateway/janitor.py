"""Removes what the store cannot: the artifacts of deleted jobs (retention, CleanQueue).
The store's Lua lists deleted job ids; every gateway takes from that list."""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError

from conveyor.artifact_stores.local import LocalArtifactStore
from conveyor.artifacts import ArtifactStore
from conveyor.store.job_store import JobStore
from gateway.background import BackgroundLoop

log = structlog.get_logger("gateway.janitor")

INTERVAL_SECONDS = 5.0


class Janitor(BackgroundLoop):
    name = "janitor"

    def __init__(self, store: JobStore, artifacts: ArtifactStore) -> None:
        super().__init__()
        self._store = store
        self._artifacts = artifacts
        self.removed = 0

    async def run_round(self) -> float:
        try:
            while ids := await self._store.take_deleted(100):
                if isinstance(self._artifacts, LocalArtifactStore):
                    await self._artifacts.delete_jobs(ids)  # one thread hop for the batch
                else:
                    for job_id in ids:
                        await self._artifacts.delete_job(job_id)
                self.removed += len(ids)
        except (RedisError, OSError) as exc:
            log.warning("janitor could not remove artifacts", error=str(exc))
        return INTERVAL_SECONDS
