"""The store's shared Redis connection (conveyor/redis_multiplex.py) against real
redis-servers: concurrent callers each get their own reply over one connection, error
replies are redis-py's exceptions, a caller gone mid-flight leaves the others' replies
in order, and the connection is made again after Redis restarts, after a FUNCTION FLUSH
and when its server turns replica (READONLY)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.exceptions

from conveyor.redis_connection import ConveyorRedis, connect
from conveyor.settings import Settings
from conveyor.store.job_store import SUBMIT_CHUNK, JobStore
from conveyor.store.records import NewJob
from conveyor.transport import store_policy
from tests.support.processes import start_redis
from tests.test_store import new


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def named_clients(client: redis.Redis, name: str) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == name)


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(redis_url: str) -> None:
    name = f"mux-{uuid.uuid4().hex[:6]}"
    client = connect(redis_url, client_name=name)
    assert isinstance(client, ConveyorRedis)
    mux = client.multiplexed
    keys = [f"mux:{uuid.uuid4().hex}" for _ in range(300)]
    try:
        got = await asyncio.gather(*(mux.execute("INCRBY", k, i) for i, k in enumerate(keys)))
        assert got == list(range(300))
        assert await mux.execute_many([("GET", k) for k in keys[:3]]) == [b"0", b"1", b"2"]
        with redis.Redis.from_url(redis_url) as sync:
            assert named_clients(sync, name) == 1  # the pool made none: one connection for all
        sync_key = keys[1]
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await mux.execute("HGET", sync_key, "field")
        # An error reply is one reply: the next caller still gets its own.
        mixed = await mux.execute_many([("HGET", sync_key, "f"), ("GET", sync_key)])
        assert isinstance(mixed[0], redis.exceptions.ResponseError) and mixed[1] == b"1"
    finally:
        await client.aclose()


async def test_a_caller_cancelled_mid_flight_leaves_the_replies_in_order(redis_url: str) -> None:
    client = connect(redis_url)
    mux = client.multiplexed
    key = f"mux:{uuid.uuid4().hex}"
    try:
        await mux.execute("SET", key, "after")
        # The script runs 50 ms in Redis: its caller goes away while it runs.
        slow = asyncio.create_task(mux.execute(
            "EVAL", "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 50000; return 'slow'", 0))
        await asyncio.sleep(0.01)
        fast = asyncio.create_task(mux.execute("GET", key))
        await asyncio.sleep(0)
        slow.cancel()
        assert await asyncio.wait_for(fast, 5) == b"after"  # not the cancelled one's 'slow'
        assert await mux.execute("ECHO", "next") == b"next"
    finally:
        await client.aclose()


async def test_store_scripts_survive_a_function_flush_and_a_redis_restart(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path / "r1")
    client = connect(url)
    store = JobStore(client, "mx", store_policy(Settings(key_prefix="mx")))
    try:
        first = await store.submit(new("q"))
        await client.function_flush()  # Redis without the library: loaded again on 'Function not found'
        second = await store.submit(new("q"))
        assert (first.position, second.position) == (1, 2)
        proc.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.submit(new("q"))  # down: tried again, then the pooled client's error
        proc, _ = start_redis(tmp_path / "r2", port=port_of(url))  # empty, on the same port
        third = await store.submit(new("q"))
        assert third.position == 1 and (await store.get_queue("q")).counts.waiting == 1
        many = await store.submit_many([new("q") for _ in range(5)])
        assert [getattr(m, "position", None) for m in many] == [2, 3, 4, 5, 6]
    finally:
        await client.aclose()
        proc.stop()


async def test_a_batch_sent_as_it_is_made_survives_its_connection_killed_on_the_way(redis_url: str) -> None:
    """SubmitJobs' calls are written as its jobs are made (fcall_stream): the shared
    connection killed after the first call went, while the next are made, and every job
    is made once -- the calls go again on a new connection (a create sent again answers
    with the job it made)."""
    prefix = f"mk{uuid.uuid4().hex[:6]}"
    client = connect(redis_url)
    store = JobStore(client, prefix, store_policy(Settings(key_prefix=prefix)))
    admin = redis.Redis.from_url(redis_url)
    try:
        await store.submit(new("q"))  # (the shared connection made)
        connection_id = await client.multiplexed.execute("CLIENT", "ID")
        jobs = [new("q") for _ in range(2 * SUBMIT_CHUNK + 5)]

        def made_as_taken() -> Iterator[NewJob]:
            for i, job in enumerate(jobs):
                if i == SUBMIT_CHUNK + 3:
                    assert admin.client_kill_filter(_id=connection_id) == 1
                yield job

        outcomes = await store.submit_many(made_as_taken())
        assert [getattr(o, "id", o) for o in outcomes] == [j.id for j in jobs]
        assert await client.multiplexed.execute("CLIENT", "ID") != connection_id
        assert (await store.get_queue("q")).counts.waiting == 1 + len(jobs)
        assert await store.client.zcard(store.keys.queue_index("q", "waiting")) == 1 + len(jobs)
    finally:
        admin.close()
        await client.aclose()


async def test_a_server_turned_replica_is_dropped_and_writes_fail_as_unreachable(tmp_path: Path) -> None:
    """READONLY (a primary demoted) is not the caller's error: the connection is made
    again (through Sentinel: to the new primary), and here, with no other server, the
    write fails as the store being unreachable, until the server is a primary again."""
    primary, primary_url = start_redis(tmp_path / "a")
    other, url = start_redis(tmp_path / "b")
    client = connect(url)
    mux = client.multiplexed
    try:
        assert await mux.execute("SET", "k", "v") == b"OK"
        with redis.Redis(port=port_of(url)) as admin:
            admin.replicaof("127.0.0.1", port_of(primary_url))
            try:
                # (Turning replica, the server may also close the connection it had.)
                with pytest.raises(redis.exceptions.ConnectionError):
                    await mux.execute("SET", "k", "w")
                with pytest.raises(redis.exceptions.ConnectionError, match="read-only"):
                    await mux.execute("SET", "k", "w")
                assert await mux.execute("GET", "k") == b"v"  # reads still served
            finally:
                admin.replicaof("NO", "ONE")
        assert await mux.execute("SET", "k", "x") == b"OK"
    finally:
        await client.aclose()
        other.stop()
        primary.stop()



async def test_a_connection_that_stops_answering_within_its_bound_is_made_again(tmp_path: Path) -> None:
    """A blocking command's caller bounds the wait (`within`): past it the connection
    counts as dead and the command goes again on a new one (here Redis, a server of the
    test's own, pauses every client for 0.8 s: the connection answers nothing within 0.3 s;
    the tries, 0.3 s each with 50, 100 and 200 ms between them, outlast the pause)."""
    proc, redis_url = start_redis(tmp_path / "r")
    client = connect(redis_url)
    mux = client.multiplexed
    try:
        before = await mux.execute("CLIENT", "ID")
        with redis.Redis.from_url(redis_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
        assert await asyncio.wait_for(mux.execute("ECHO", "late", within=0.3), 10) == b"late"
        assert await mux.execute("CLIENT", "ID") != before
    finally:
        await client.aclose()
        proc.stop()
