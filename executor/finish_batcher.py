"""Attempts that end together finish together: every finish that comes while one
round trip to the store is under way goes in the next, as one script (finish.lua
ends each attempt as if alone, then fills the freed slots once). An idle executor's
single finish goes at once; a busy one's are coalesced, not delayed.

With a taker (the worker's consumer), the same script also takes the messages of the
jobs that go to the slots the batch frees (and any other free one), so that a busy
worker gets its next jobs in the reply of its finishes: one round trip per batch of
jobs, not two (the consumer's own take is for an idle worker)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from conveyor.store.job_store import JobStore
from conveyor.store.records import Finish, State, Taken

#: The most attempts one round trip ends.
MAX_BATCH = 64


class Taker(Protocol):
    """Who takes messages along with a batch of finishes (executor/consumer.py)."""

    def reserve(self, finishing: int) -> tuple[int, str, int, list[str]]:
        """How many messages to take with a batch ending `finishing` attempts (reserved
        until taken() or released()), for which worker, its stall timeout ms, and the
        Dramatiq queues to take from."""
        ...

    def taken(self, reserved: int, taken: Taken) -> None:
        """The messages taken with a batch (`reserved` as reserve() said): run them."""
        ...

    def released(self, reserved: int) -> None:
        """The batch failed: nothing was taken for the `reserved` slots."""
        ...


class FinishBatcher:
    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._pending: list[tuple[Finish, asyncio.Future[State | None]]] = []
        self._sending: asyncio.Task[None] | None = None
        self.taker: Taker | None = None

    async def finish(self, finish: Finish) -> State | None:
        """End the attempt: the job's new state, or None if the attempt no longer ran."""
        future: asyncio.Future[State | None] = asyncio.get_running_loop().create_future()
        self._pending.append((finish, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send(), name="finish-batcher")
        return await future

    async def _finish(self, finishes: list[Finish]) -> list[State | None]:
        taker = self.taker
        if taker is None:
            return await self._store.finish_many(finishes)
        count, worker_id, stall_ms, queues = taker.reserve(len(finishes))
        try:
            states, taken = await self._store.finish_and_take(finishes, count, worker_id, stall_ms, queues)
        except BaseException:
            taker.released(count)
            raise
        taker.taken(count, taken)
        return states

    async def _send(self) -> None:
        batch: list[tuple[Finish, asyncio.Future[State | None]]] = []
        try:
            # No wait to fill a batch: this task's first step runs in the loop's next
            # turn, after every finish of this one (jobs that end together); later ones
            # gather while a batch's round trip is under way, and go in the next.
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    states = await self._finish([finish for finish, _ in batch])
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
