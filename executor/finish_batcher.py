"""Attempts that end together finish together: every finish that comes while one
round trip to the store is under way goes in the next, as one script (finish.lua
ends each attempt as if alone, then fills the freed slots once). An idle executor's
single finish goes at once; a busy one's are coalesced, not delayed."""

from __future__ import annotations

import asyncio

from conveyor.store.job_store import JobStore
from conveyor.store.records import Finish, State

#: The most attempts one round trip ends.
MAX_BATCH = 64


class FinishBatcher:
    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._pending: list[tuple[Finish, asyncio.Future[State | None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def finish(self, finish: Finish) -> State | None:
        """End the attempt: the job's new state, or None if the attempt no longer ran."""
        future: asyncio.Future[State | None] = asyncio.get_running_loop().create_future()
        self._pending.append((finish, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send(), name="finish-batcher")
        return await future

    async def _send(self) -> None:
        batch: list[tuple[Finish, asyncio.Future[State | None]]] = []
        try:
            # One turn of the loop first: the jobs ending in this same turn go along.
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    states = await self._store.finish_many([finish for finish, _ in batch])
                except Exception as exc:  # every waiter gets the store's error as its own
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), state in zip(batch, states, strict=True):
                    if not future.done():
                        future.set_result(state)
        finally:
            self._sending = None
            # Stopped mid-way (the worker is stopping): nobody waits forever.
            for _, future in batch + self._pending:
                if not future.done():
                    future.cancel()
