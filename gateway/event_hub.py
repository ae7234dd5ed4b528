"""One shared reader of the global event stream per gateway process, fanning events
out to every local watcher: thousands of WatchJob streams cost one blocking Redis
connection, not one each. With nobody watching, the reader rests (and reads nothing).

Watchers subscribe *before* they read the job and replay its stream, then take live
events from their subscription, dropping sequences they already sent. A subscriber
that falls behind (its buffer full) is marked and replays from the job's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from conveyor.store.job_store import JobStore
from conveyor.store.records import EventRecord

log = structlog.get_logger("gateway.events")

SUBSCRIPTION_BUFFER = 256


class HubClosed(Exception):
    """The gateway is shutting down."""


class Subscription:
    def __init__(self, key: str) -> None:
        self.key = key
        self.overflowed = False
        self._queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(SUBSCRIPTION_BUFFER)
        self._closed = False

    def push(self, event: EventRecord) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def next(self, timeout: float) -> EventRecord | None:
        """The next event, or None when `timeout` passes first. Raises HubClosed."""
        if self._closed:
            raise HubClosed
        try:
            # asyncio.timeout, not wait_for: no extra task per wait, which matters
            # with thousands of idle watchers.
            async with asyncio.timeout(timeout):
                event = await self._queue.get()
        except TimeoutError:
            return None
        if event is None:
            raise HubClosed
        return event

    def take_overflow(self) -> bool:
        """True once after the buffer overflowed; the buffer is emptied then."""
        if not self.overflowed:
            return False
        self.overflowed = False
        while not self._queue.empty():
            self._queue.get_nowait()
        return True


class EventHub:
    def __init__(self, store: JobStore, reader: aioredis.Redis, *, block_ms: int = 1000) -> None:
        self._store = store
        self._reader = reader
        self._block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_id = "$"
        # Set while the reader reads: from the first subscription until it finds none.
        self._reading = asyncio.Event()
        self._waking = asyncio.Lock()
        self._closed = False
        self.events_read = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def subscribe(self, key: str) -> Subscription:
        """Subscribe to a job id (or 'queue:<name>' for a queue's events). Every event
        appended after this returns reaches the subscription."""
        if not self._reading.is_set():
            async with self._waking:
                if not self._reading.is_set():
                    # The reader rested: it resumes from the stream's end as it is now.
                    self._last_id = await self._store.latest_event_id()
                    self._reading.set()
        sub = Subscription(key)
        self._subs.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def close(self) -> None:
        # The flag, too: a cancel that lands inside redis-py's blocking read can be
        # swallowed; the reader then leaves at the end of that read.
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reader.aclose()

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            if not self._subs:
                self._reading.clear()
                await self._reading.wait()
                continue
            try:
                self._last_id, events = await self._store.read_events(
                    self._last_id, block_ms=self._block_ms, client=self._reader
                )
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("event reader lost redis; retrying", error=str(exc), failures=failures)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            if not events:
                continue
            self.events_read += len(events)
            for ev in events:
                for key in (ev.job_id, f"queue:{ev.queue}"):
                    for sub in self._subs.get(key, ()):
                        sub.push(ev)


async def follow(
    sub: Subscription,
    last: int,
    *,
    sequence_of: Callable[[EventRecord], int],
    replay: Callable[[int], Awaitable[list[EventRecord]]],
    heartbeat: float,
) -> AsyncIterator[EventRecord | None]:
    """Every event after sequence `last`, in order, once each: first replayed from the
    store, then live from `sub` (subscribed before the caller read anything), replaying
    again across any gap or overflow. Yields None after `heartbeat` seconds of quiet.
    Serves WatchJob (per-job sequences) and WatchQueue (per-queue sequences); `replay`
    returns a page of the events after a sequence (empty once there are none)."""
    while page := await replay(last):
        for replayed in page:
            yield replayed
            last = sequence_of(replayed)
    while True:
        live = await sub.next(heartbeat)
        if sub.take_overflow() or (live is not None and sequence_of(live) > last + 1):
            while page := await replay(last):
                for missed in page:
                    yield missed
                    last = sequence_of(missed)
        elif live is None:
            yield None
        elif sequence_of(live) > last:
            yield live
            last = sequence_of(live)
