"""The gateway's event hub against a real Redis: it reads the streams of the queues
watched in its process, starts on a newly watched queue at once even while blocked
on others, and a watcher that falls behind catches up from the store whole."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from conveyor.store.job_store import JobStore, connect
from conveyor.store.records import EventRecord, State
from gateway.event_hub import ENDS_KEPT_SECONDS, SUBSCRIPTION_BUFFER, EventHub, Subscription, follow
from tests.test_store import new

READER = f"hub-{uuid.uuid4().hex[:8]}"  # the hub's reader connection, by name


@pytest.fixture
async def hub(store: JobStore, redis_url: str) -> AsyncIterator[EventHub]:
    # A block (under redis-py's 5 s socket timeout) longer than the wait below for a
    # newly watched queue's event: only the wake gets a blocked read to look at it in time.
    h = EventHub(store, connect(redis_url, max_connections=1, client_name=READER), block_ms=4_000)
    await h.start()
    yield h
    await h.close()


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def reader_blocked(store: JobStore) -> bool:
    clients = await store.client.client_list()
    return any(c["name"] == READER and c["cmd"] == "xread" and "b" in c["flags"] for c in clients)


async def test_a_newly_watched_queue_is_read_at_once_though_the_reader_is_blocked(
    store: JobStore, hub: EventHub
) -> None:
    watched = await hub.subscribe_queue("a")
    first = new(queue="a")
    await store.submit(first)
    assert [e.job_id for e in await watched.wait(10)] == [first.id]
    await until(lambda: reader_blocked(store), 10)

    job = new(queue="b")
    sub = await hub.subscribe_job(job.id, "b")
    await store.submit(job)
    # Well within the reader's block: the wake, not the block's end, let it in.
    events = await sub.wait(2.5)
    assert [(e.job_id, e.state) for e in events] == [(job.id, State.WAITING)]
    # Another job of the same queue is not this subscription's.
    await store.submit(new(queue="b"))
    await store.submit(new(queue="a"))
    assert len(await watched.wait(10)) == 1
    assert await sub.wait(0.2) == []


async def test_a_watcher_that_falls_behind_catches_up_whole_and_in_order(store: JobStore, hub: EventHub) -> None:
    sub = await hub.subscribe_queue("busy")
    total = (SUBSCRIPTION_BUFFER // 500 + 2) * 500
    for _ in range(total // 500):
        await store.submit_many([new(queue="busy") for _ in range(500)])
    await until(lambda: asyncio.sleep(0, sub.overflowed), 10)  # its buffer overflowed

    got: list[EventRecord] = []

    async def collect() -> None:
        async for batch in follow(
            sub, 0, sequence_of=lambda ev: ev.queue_sequence, heartbeat=5,
            replay=lambda after: store.queue_events_after("busy", after),
        ):
            got.extend(batch)
            if got and got[-1].queue_sequence == total:
                return

    await asyncio.wait_for(collect(), 20)
    assert [e.queue_sequence for e in got] == list(range(1, total + 1))
    hub.unsubscribe(sub)
    assert hub.subscriber_count == 0


async def test_a_watcher_cancelled_while_it_subscribes_leaves_the_queue_read_for_the_next(
    store: JobStore, hub: EventHub
) -> None:
    """A watch's client that goes away while its first subscription of a queue is
    being set up (a connection reset right after its snapshot) cancels the
    subscription mid-way; the next watcher of that queue still gets its events live."""
    woken = asyncio.Event()
    hold = asyncio.Event()  # never set: the first subscriber's wake waits until cancelled
    wake = store.wake_reader

    async def wake_held(key: str) -> None:
        # A seam in time, not a fake: the real wake, reached only after a cancel would
        # have had to land exactly here (what a reset connection does, now and then).
        woken.set()
        await hold.wait()
        await wake(key)

    store.wake_reader = wake_held  # type: ignore[method-assign,assignment]
    job = new(queue="cut")
    first = asyncio.create_task(hub.subscribe_job(job.id, "cut"))
    await asyncio.wait_for(woken.wait(), 10)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.wake_reader = wake  # type: ignore[method-assign]

    sub = await hub.subscribe_job(job.id, "cut")
    await store.submit(job)
    events = await sub.wait(5)
    assert [(e.job_id, e.state) for e in events] == [(job.id, State.WAITING)]


async def next_events(sub: Subscription, count: int, timeout: float = 10) -> list[EventRecord]:
    """The next `count` events of `sub` (they may come in several reads)."""
    got: list[EventRecord] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await sub.wait(timeout)
    return got


async def test_a_wait_can_tell_when_its_job_may_have_ended_before_it_subscribed(
    store: JobStore, hub: EventHub
) -> None:
    """WaitJob reads the job, subscribes, and reads it again only when the hub cannot
    rule out that the job ended in between unheard (may_have_ended): a queue whose
    reading begins with the subscription, an end the reader read before it, or a read
    too old to judge, say "maybe"; a job of a queue read all along whose end nobody
    read, "no" — and its end then reaches the subscription."""
    loop = asyncio.get_running_loop()
    # A queue not read before the subscription: events before it were not read.
    cold = new(queue="cold")
    await store.submit(cold)
    read_at = loop.time()
    await store.get(cold.id)
    sub = await hub.subscribe_job(cold.id, "cold")
    assert hub.may_have_ended(sub, read_at)
    hub.unsubscribe(sub)

    watched = await hub.subscribe_queue("warm")  # the queue is read from here on
    ended, live = new(queue="warm"), new(queue="warm")
    await store.submit_many([ended, live])
    assert len(await next_events(watched, 2)) == 2

    # Ended after the caller's read, its end read before the subscription: maybe.
    read_at = loop.time()
    assert (await store.get(ended.id)).state is State.WAITING
    await store.cancel(ended.id, b"")
    assert [(e.job_id, e.state) for e in await next_events(watched, 1)] == [(ended.id, State.CANCELLED)]
    sub = await hub.subscribe_job(ended.id, "warm")
    assert hub.may_have_ended(sub, read_at)
    hub.unsubscribe(sub)

    # Not ended, its queue read all along: no; its end comes to the subscription.
    read_at = loop.time()
    assert (await store.get(live.id)).state is State.WAITING
    sub = await hub.subscribe_job(live.id, "warm")
    assert not hub.may_have_ended(sub, read_at)
    # ...unless the caller's read is too old for the hub to judge.
    assert hub.may_have_ended(sub, read_at - ENDS_KEPT_SECONDS - 1)
    await store.cancel(live.id, b"")
    assert [(e.job_id, e.state) for e in await next_events(sub, 1)] == [(live.id, State.CANCELLED)]
    hub.unsubscribe(sub)
    hub.unsubscribe(watched)
