"""One shared reader of the watched queues' event streams per gateway process, fanning
events out to every local watcher: thousands of watchers cost one blocking Redis
connection, not one each. It reads only the streams of queues someone here watches
(a job's watcher watches its job's queue); with nobody watching (for LINGER_SECONDS), it
rests.

Watchers subscribe, then read what they need from the store (the job's log, the
queue's stream) and replay it, then take live events from their subscription,
dropping sequences they already sent. A subscriber that falls behind (its buffer
full) is marked and replays from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from conveyor.errors import OutOfRange
from conveyor.store.job_store import JobStore
from conveyor.store.records import EventRecord

log = structlog.get_logger("gateway.events")

#: Events a subscription holds for a watcher that has not taken them yet; past that
#: it is marked behind and catches up from the store instead.
SUBSCRIPTION_BUFFER = 4096
#: Events read per stream per read.
READ_COUNT = 1000
#: How long a queue stays read after its last watcher leaves: the next watcher of it
#: (a WaitJob after each SubmitJob) then subscribes without the two round trips of
#: starting to read it (its stream's end, waking the reader).
LINGER_SECONDS = 5.0
#: A quiet stream's heartbeat comes after a random 75-100 % of the heartbeat interval,
#: never later: streams that opened together, or got one event together (a job's
#: watchers), would otherwise beat together, every interval, in bursts as large as
#: the streams (10,000 at once: seconds of the gateway's CPU that events wait behind).
HEARTBEAT_SPREAD = 0.25
#: How long the hub remembers the jobs whose end it read (for `may_have_ended`): far
#: longer than a caller's read of a job takes to reach its subscription (one round trip).
ENDS_KEPT_SECONDS = 2.0


class HubClosed(Exception):
    """The gateway is shutting down."""


class Subscription:
    """The live events of one job, or of one queue, for one watcher."""

    def __init__(self, key: str, queue: str) -> None:
        self.key = key
        self.queue = queue
        self.overflowed = False
        self._events: deque[EventRecord] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def push(self, event: EventRecord) -> None:
        if len(self._events) >= SUBSCRIPTION_BUFFER:
            self.overflowed = True
            return
        self._events.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def wait(self, timeout: float) -> list[EventRecord]:
        """Every event that arrived since the last call, oldest first; an empty list
        when `timeout` passes first. Raises HubClosed."""
        if not self._events and not self._closed:
            self._ready.clear()
            # asyncio.timeout, not wait_for: no extra task per wait, which matters
            # with thousands of idle watchers.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        if self._closed:
            raise HubClosed
        events = list(self._events)
        self._events.clear()
        return events

    def take_overflow(self) -> bool:
        """True once after the buffer overflowed; the buffer is emptied then."""
        if not self.overflowed:
            return False
        self.overflowed = False
        self._events.clear()
        return True


class EventHub:
    def __init__(self, store: JobStore, reader: aioredis.Redis, *, block_ms: int = 1000) -> None:
        self._store = store
        self._reader = reader
        self._block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        #: The watched queues: how many subscriptions each, and the queue sequence the
        #: reader has read up to.
        self._watchers: dict[str, int] = {}
        self._read_up_to: dict[str, int] = {}
        #: Queues read with no watcher left, and when each stops being read.
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        #: When each read queue's reading began (the loop's clock, once its start was read).
        self._read_since: dict[str, float] = {}
        #: The jobs whose end the reader read in the last ENDS_KEPT_SECONDS, oldest first.
        self._ends: deque[tuple[float, str]] = deque()
        self._ended: dict[str, float] = {}
        self._wake_key = store.keys.hub_wake(uuid.uuid4().hex)
        self._wake_seen = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()  # set while some queue is watched
        self._adding = asyncio.Lock()
        self._closed = False
        self.events_read = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def subscribe_job(self, job_id: str, queue: str) -> Subscription:
        """The events of job `job_id` (of queue `queue`) appended after this returns."""
        return await self._subscribe(Subscription(job_id, queue))

    async def subscribe_queue(self, queue: str) -> Subscription:
        """The events of queue `queue` appended after this returns."""
        return await self._subscribe(Subscription(f"queue:{queue}", queue))

    async def _subscribe(self, sub: Subscription) -> Subscription:
        if self._closed:
            raise HubClosed
        q = sub.queue
        self._watchers[q] = self._watchers.get(q, 0) + 1
        lingering = self._lingering.pop(q, None)
        if lingering is not None:
            lingering.cancel()
        try:
            if q not in self._read_up_to:
                async with self._adding:
                    if q not in self._read_up_to:
                        # Read from the stream's end as it is now; the watcher replays
                        # what came before from the store.
                        sequence = await self._store.queue_sequence(q)
                        # The queue is read from here on and the reader knows it, with
                        # no await in between: a watcher cancelled in the wake below
                        # (its client gone) must not leave a read queue unread by a
                        # reader at rest, for the watchers that come next.
                        self._read_up_to[q] = sequence
                        self._read_since[q] = asyncio.get_running_loop().time()
                        self._reading.set()
                        # A read blocked on the other queues takes this one in now, not
                        # at the end of its block.
                        await self._store.wake_reader(self._wake_key)
        except BaseException:
            self._forget(q)
            raise
        self._subs.setdefault(sub.key, set()).add(sub)
        return sub

    def may_have_ended(self, sub: Subscription, since: float) -> bool:
        """Whether job `sub.key` may have ended unheard by `sub`, given that the caller
        read it, not ended, in a read sent at loop time `since` or later: False only
        when its queue has been read from before `since` (so every later event is read,
        before `sub` came, or pushed to it) and the reader read no end of this job
        lately (an end read after `since` is still remembered). A WaitJob then needs
        no second read of the job to close that gap."""
        loop_now = asyncio.get_running_loop().time()
        began = self._read_since.get(sub.queue)
        if began is None or began >= since or since < loop_now - ENDS_KEPT_SECONDS:
            return True
        return sub.key in self._ended

    def _note_end(self, job_id: str) -> None:
        now = asyncio.get_running_loop().time()
        self._ends.append((now, job_id))
        self._ended[job_id] = now
        horizon = now - ENDS_KEPT_SECONDS
        while self._ends and self._ends[0][0] < horizon:
            then, old = self._ends.popleft()
            if self._ended.get(old) == then:
                del self._ended[old]

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]
            self._forget(sub.queue)

    def _forget(self, queue: str) -> None:
        left = self._watchers.get(queue, 0) - 1
        if left > 0:
            self._watchers[queue] = left
        else:
            self._watchers.pop(queue, None)
            if queue in self._read_up_to and queue not in self._lingering and not self._closed:
                loop = asyncio.get_running_loop()
                self._lingering[queue] = loop.call_later(LINGER_SECONDS, self._stop_reading, queue)
            else:
                self._read_up_to.pop(queue, None)
                self._read_since.pop(queue, None)

    def _stop_reading(self, queue: str) -> None:
        self._lingering.pop(queue, None)
        if queue not in self._watchers:
            self._read_up_to.pop(queue, None)
            self._read_since.pop(queue, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def close(self) -> None:
        # The flag, too: a cancel that lands inside redis-py's blocking read can be
        # swallowed; the reader then leaves at the end of that read.
        self._closed = True
        self._reading.set()
        for lingering in self._lingering.values():
            lingering.cancel()
        self._lingering.clear()
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
            if not self._read_up_to:
                self._reading.clear()
                await self._reading.wait()
                continue
            try:
                batches, self._wake_seen = await self._store.read_queue_events(
                    dict(self._read_up_to), (self._wake_key, self._wake_seen),
                    block_ms=self._block_ms, count=READ_COUNT, client=self._reader,
                )
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("event reader lost redis; retrying", error=str(exc), failures=failures)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            for queue, events in batches.items():
                if queue not in self._read_up_to:
                    continue  # nobody here watches it any more
                self._read_up_to[queue] = max(self._read_up_to[queue], events[-1].queue_sequence)
                self.events_read += len(events)
                queue_subs = self._subs.get(f"queue:{queue}", ())
                for ev in events:
                    if ev.terminal:
                        self._note_end(ev.job_id)
                    for sub in queue_subs:
                        sub.push(ev)
                    for sub in self._subs.get(ev.job_id, ()):
                        sub.push(ev)


async def follow(
    sub: Subscription,
    last: int,
    *,
    sequence_of: Callable[[EventRecord], int],
    replay: Callable[[int], Awaitable[list[EventRecord]]],
    heartbeat: float,
) -> AsyncIterator[list[EventRecord]]:
    """Every event after sequence `last`, in order, once each, in batches (the events
    that were ready together): first replayed from the store, then live from `sub`
    (subscribed before the caller read anything), replaying again across any gap or
    overflow. Yields an empty batch after `heartbeat` seconds of quiet at most (a random
    75-100 % of it: HEARTBEAT_SPREAD). Serves
    WatchJob (per-job sequences) and WatchQueue (per-queue sequences); `replay`
    returns a page of the events after a sequence (empty once there are none).

    Raises OutOfRange, rather than skip, when the events right after `last` are no
    longer kept (a queue's stream keeps its newest ~100,000): a watcher that asked to
    resume there, or fell that far behind, must know that it missed some."""

    async def catch_up() -> AsyncIterator[list[EventRecord]]:
        nonlocal last
        while page := await replay(last):
            oldest = sequence_of(page[0])
            if oldest > last + 1:
                raise OutOfRange(
                    f"the events after sequence {last} are no longer kept; the oldest kept is {oldest}",
                    reason="EVENTS_TRIMMED", metadata={"after_sequence": str(last), "oldest_sequence": str(oldest)},
                )
            yield page
            last = sequence_of(page[-1])

    async for page in catch_up():
        yield page
    while True:
        live = await sub.wait(random.uniform(heartbeat * (1 - HEARTBEAT_SPREAD), heartbeat))
        if not live and not sub.overflowed:
            yield []
            continue
        fresh: list[EventRecord] = []
        gap = False
        for event in live:
            seq = sequence_of(event)
            if seq > last + 1:
                gap = True
                break
            if seq == last + 1:
                fresh.append(event)
                last = seq
        if fresh:
            yield fresh
        if sub.take_overflow() or gap:
            async for page in catch_up():
                yield page
