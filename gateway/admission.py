"""Admission: decides what runs next. Waiting jobs stay in the store's priority
order and are handed to the executors only as they have free slots (admit() in the
store's Lua; executors also refill their own freed slots as they finish a job);
due delayed jobs are promoted; jobs handed over but never claimed, and jobs whose
executor died, are recovered (reap.lua). Every gateway runs this loop; the scripts
are atomic, so several gateways never hand the same job over twice."""

from __future__ import annotations

import asyncio

import structlog
from google.rpc import code_pb2
from redis.exceptions import RedisError

from conveyor.statuses import status_bytes
from conveyor.store.job_store import JobStore
from gateway.background import BackgroundLoop

log = structlog.get_logger("gateway.admission")

DISPATCH_BATCH = 500
TICK_SECONDS = 0.25
REAP_EVERY_SECONDS = 1.0
LOST_EXECUTOR = status_bytes(
    code_pb2.UNAVAILABLE, "EXECUTOR_LOST", "the executor running this attempt stopped responding"
)


class Admission(BackgroundLoop):
    name = "admission"

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self._store = store
        self.handed_over = 0
        self._last_tick = self._last_reap = 0.0

    async def run_round(self) -> float:
        now = asyncio.get_running_loop().time()
        try:
            if now - self._last_tick >= TICK_SECONDS:
                self._last_tick = now
                await self._store.promote_due()
            if now - self._last_reap >= REAP_EVERY_SECONDS:
                self._last_reap = now
                requeued, failed = await self._store.reap(LOST_EXECUTOR)
                if requeued or failed:
                    log.warning("recovered in-flight jobs", requeued=requeued, failed=failed)
            while True:
                handovers = await self._store.dispatch(DISPATCH_BATCH)
                self.handed_over += len(handovers)
                if len(handovers) < DISPATCH_BATCH:
                    break
        except (RedisError, OSError) as exc:
            log.warning("admission could not reach redis", error=str(exc))
        return TICK_SECONDS
