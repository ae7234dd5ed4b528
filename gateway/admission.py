"""Admission: decides what runs next. Waiting jobs stay in the store's priority
order and are handed to the executors only as they have free slots (admit() in the
store's Lua; executors also refill their own freed slots as they finish a job);
due delayed jobs are promoted; jobs handed over but never claimed, and jobs whose
executor died, are recovered (reap.lua). Every gateway runs this loop; the scripts
are atomic, so several gateways never hand the same job over twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from google.rpc import code_pb2
from redis.exceptions import RedisError

from conveyor.statuses import status_bytes
from conveyor.store.job_store import JobStore
from conveyor.store.records import EventRecord, EventType, State

log = structlog.get_logger("gateway.admission")

DISPATCH_BATCH = 500
TICK_SECONDS = 0.25
REAP_EVERY_SECONDS = 1.0
LOST_EXECUTOR = status_bytes(
    code_pb2.UNAVAILABLE, "EXECUTOR_LOST", "the executor running this attempt stopped responding"
)


class Admission:
    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.handed_over = 0

    def wake(self) -> None:
        self._wake.set()

    def on_events(self, events: Sequence[EventRecord]) -> None:
        """Hub listener: a job that joined a line (another gateway's submit, a retry)
        may be admitted now. Freed slots need no wake-up: finishing a job refills its
        slot in the same script."""
        if any(ev.type is EventType.STATE and ev.state is State.WAITING for ev in events):
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="admission")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_reap = last_tick = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()
            try:
                if loop.time() - last_tick >= TICK_SECONDS:
                    last_tick = loop.time()
                    await self._store.promote_due()
                if loop.time() - last_reap >= REAP_EVERY_SECONDS:
                    last_reap = loop.time()
                    requeued, failed = await self._store.reap(LOST_EXECUTOR)
                    if requeued or failed:
                        log.warning("recovered in-flight jobs", requeued=requeued, failed=failed)
                await self._dispatch()
            except (RedisError, OSError) as exc:
                log.warning("admission could not reach redis", error=str(exc))
                await asyncio.sleep(0.5)

    async def _dispatch(self) -> None:
        while True:
            handovers = await self._store.dispatch(DISPATCH_BATCH)
            self.handed_over += len(handovers)
            if len(handovers) < DISPATCH_BATCH:
                return
