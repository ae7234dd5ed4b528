"""What the gateway does to cost less per call (issue 16) keeps its behaviour: a
queue stays read a little after its last watcher leaves, and a watcher that comes
in that time gets its job's events; once the time is up the reader rests. An event's
WatchJob message is built once for all its watchers. The janitor's batch delete
removes the listed jobs' artifact folders only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.artifact_stores.local import LocalArtifactStore
from conveyor.store.job_store import JobStore, connect
from conveyor.store.records import State
from gateway import event_hub
from gateway.event_hub import EventHub
from gateway.mapping import event_to_proto
from gateway.servicers.jobs import event_message
from tests.test_store import new

READER = f"hub-linger-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def hub(store: JobStore, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EventHub]:
    monkeypatch.setattr(event_hub, "LINGER_SECONDS", 0.3)
    h = EventHub(store, connect(redis_url, max_connections=1, client_name=READER), block_ms=200)
    await h.start()
    yield h
    await h.close()


async def reader_reading(store: JobStore) -> bool:
    clients = await store.client.client_list()
    return any(c["name"] == READER and c["cmd"] == "xread" and "b" in c["flags"] for c in clients)


async def test_a_watcher_arriving_after_the_last_one_left_gets_its_events_then_the_reader_rests(
    store: JobStore, hub: EventHub
) -> None:
    first = new(queue="lq")
    sub = await hub.subscribe_job(first.id, "lq")
    await store.submit(first)
    assert [e.state for e in await sub.wait(10)] == [State.WAITING]
    hub.unsubscribe(sub)  # the queue's last watcher

    # Within the linger: the queue is still read, and the next watcher's events come.
    second = new(queue="lq")
    sub = await hub.subscribe_job(second.id, "lq")
    await store.submit(second)
    assert [(e.job_id, e.state) for e in await sub.wait(10)] == [(second.id, State.WAITING)]
    hub.unsubscribe(sub)

    # After it, nobody watches: the reader stops blocking on the queue's stream.
    # (Seen idle over more than a block's length, not between two reads.)
    idle_checks = 0
    async with asyncio.timeout(15):
        while idle_checks < 6:
            idle_checks = 0 if await reader_reading(store) else idle_checks + 1
            await asyncio.sleep(0.1)

    # And a watcher after that starts the reading again.
    third = new(queue="lq")
    sub = await hub.subscribe_job(third.id, "lq")
    await store.submit(third)
    assert [(e.job_id, e.state) for e in await sub.wait(10)] == [(third.id, State.WAITING)]
    hub.unsubscribe(sub)
    assert hub.subscriber_count == 0


async def test_an_events_watch_message_is_built_once_and_says_what_the_event_says(
    store: JobStore, hub: EventHub
) -> None:
    job = new(queue="mq")
    a, b = await hub.subscribe_job(job.id, "mq"), await hub.subscribe_job(job.id, "mq")
    await store.submit(job)
    (ev_a,), (ev_b,) = await a.wait(10), await b.wait(10)
    assert ev_a is ev_b  # the hub hands both watchers the same record
    message = event_message(ev_a)
    assert event_message(ev_b) is message
    assert message.event == event_to_proto(ev_a)
    assert message.event.job_id == job.id
    hub.unsubscribe(a)
    hub.unsubscribe(b)


async def test_deleting_jobs_in_a_batch_removes_only_their_artifact_folders(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    await store.delete_jobs(["job-1"])  # no folder at all yet: nothing to do
    await store.put("job-1", "a.png", b"1", "image/png")
    await store.put("job-2", "a.png", b"2", "image/png")
    await store.put("job-3", "b.txt", b"3", "text/plain")
    await store.delete_jobs(["job-1", "job-3", "never-existed", "../artifacts", "job-1"])
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["job-2"]
    assert await store.stat("job-2", "a.png") == (1, "image/png")
    assert (tmp_path / "artifacts").is_dir()
