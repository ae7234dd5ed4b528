"""The Lua scripts as a whole: key names agree with the Python side, every refusal a
script can give is mapped to a domain error, every script says what it takes and
answers, and the library of them all loads on a real Redis, its commands keeping
nothing of one call for the next."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from conveyor.errors import ConveyorError
from conveyor.queue_stats import HISTOGRAM_BOUNDS_MS
from conveyor.settings import MAX_TENANT_WEIGHT, Settings
from conveyor.store.job_store import TENANT_STATE_INDEXES, JobStore
from conveyor.store.keys import Keys
from conveyor.store.records import State
from conveyor.store.replies import REFUSALS, Context, refused
from conveyor.store.schedule_store import ScheduleStore
from conveyor.store.scripts import INCLUDES_DIR, LUA_DIR, SCRIPT_NAMES, library
from conveyor.store.session_store import SessionStore
from conveyor.transport import TRANSPORT_QUEUE, kind_queue, store_policy
from tests.support.processes import start_redis
from tests.test_store import new

#: Each Lua key builder of includes/base.lua, called with sample arguments, and the
#: name the Python side builds for the same thing.
PREFIX = "pfx"
LUA_KEYS = {
    "k_job('J')": Keys(PREFIX).job("J"),
    "k_job_events('J')": Keys(PREFIX).job_events("J"),
    "k_queue('Q')": Keys(PREFIX).queue("Q"),
    "k_index('Q', 'waiting')": Keys(PREFIX).queue_index("Q", "waiting"),
    "k_index('Q', 'events')": Keys(PREFIX).queue_events("Q"),
    "k_executor('X')": Keys(PREFIX).executor("X"),
    "K_JOBS": Keys(PREFIX).jobs,
    "K_QUEUES": Keys(PREFIX).queues,
    "K_INFLIGHT": Keys(PREFIX).inflight,
    "K_DELAYED": Keys(PREFIX).delayed,
    "K_EXECUTORS": Keys(PREFIX).executors,
    "K_CAPACITY": Keys(PREFIX).capacity,
    "K_GC": Keys(PREFIX).deleted,
    "K_CANCEL_CHANNEL": Keys(PREFIX).cancel_channel,
    "K_KINDS": Keys(PREFIX).kinds,
    "k_api_key('K')": Keys(PREFIX).api_key("K"),
    "k_owner_jobs('T')": Keys(PREFIX).owner_jobs("T"),
    "k_index('Q', 'owner:' .. 'T')": Keys(PREFIX).queue_index("Q", "owner:T"),
    "k_api_key_hash('H')": Keys(PREFIX).api_key_hash("H"),
    "K_API_KEYS": Keys(PREFIX).api_keys,
    "K_KIND_CAPACITY": Keys(PREFIX).kind_capacity,
    "K_KIND_INFLIGHT": Keys(PREFIX).kind_inflight,
    "K_TENANT_INFLIGHT": Keys(PREFIX).tenant_inflight,
    "k_queue_tenant('Q', 'T')": Keys(PREFIX).queue_tenant("Q", "T"),
    "k_tenant_line('Q', 'T')": Keys(PREFIX).tenant_line("Q", "T"),
    f"kind_queue({{queue = '{TRANSPORT_QUEUE}'}}, 'scrape')": kind_queue("scrape"),
}


async def test_key_names_in_lua_and_in_python_agree(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    schedules = ScheduleStore(client, PREFIX)
    sessions = SessionStore(client, PREFIX)
    lua_keys = {
        **LUA_KEYS,
        "k_session('O', 'N')": sessions.key("O", "N"),
        "k_owner_sessions('O')": sessions.index_key("O"),
        "k_schedule('S')": schedules.key("S"),
        "K_SCHEDULES_DUE": schedules.due_key,
        "k_owner_schedules('O')": schedules.owner_key("O"),
    }
    base = (INCLUDES_DIR / "base.lua").read_text() + (INCLUDES_DIR / "admission.lua").read_text()
    script = f"local call_args = ARGV\n{base}\nbegin(call_args)\nreturn {{{', '.join(lua_keys)}}}"
    try:
        built = await client.eval(script, 0, PREFIX)
    finally:
        await client.aclose()
    assert dict(zip(lua_keys, [b.decode() for b in built], strict=True)) == lua_keys


async def test_shared_constants_in_lua_and_in_python_agree(redis_url: str) -> None:
    """What both sides need to agree on and both define: the histogram buckets, the
    largest fair-share weight (FAIR_STEP divides exactly by each weight up to it), the
    states with a per-tenant index (ListJobs reads the others from the queue's)."""
    client = aioredis.Redis.from_url(redis_url)
    script = ((INCLUDES_DIR / "base.lua").read_text() + (INCLUDES_DIR / "stats.lua").read_text()
              + (INCLUDES_DIR / "line.lua").read_text().replace("-- @include base", "")
              + "\nlocal tenant_states = {}\nfor state in pairs(TENANT_STATE_INDEX) do"
              + " tenant_states[#tenant_states + 1] = state end"
              + "\nreturn {HIST_BOUNDS_MS, FAIR_STEP, tenant_states}")
    try:
        bounds, step, tenant_states = await client.eval(script, 0, PREFIX)
    finally:
        await client.aclose()
    assert tuple(bounds) == HISTOGRAM_BOUNDS_MS
    assert all(step % weight == 0 for weight in range(1, MAX_TENANT_WEIGHT + 1))
    assert {State(s.decode()) for s in tenant_states} == TENANT_STATE_INDEXES


def test_every_refusal_a_script_gives_is_mapped_to_a_domain_error() -> None:
    used = set()
    for path in [*LUA_DIR.glob("*.lua"), *INCLUDES_DIR.glob("*.lua")]:
        used |= set(re.findall(r"refuse\('([A-Z_]+)'", path.read_text()))
    mapped = set(REFUSALS) | {"NEXT_RUN_NOT_AFTER"}  # a caller's fault: raised as it is
    assert used == mapped
    # Every mapped refusal turns into a domain error with its arguments.
    samples = {"JOB_STATE": ["j1", "COMPLETED"], "QUOTA_EXCEEDED": ["acme", "3"], "RATE_EXCEEDED": ["acme", "5"]}
    for reason in REFUSALS:
        args = samples.get(reason, ["x1"])
        error = refused(ResponseError(" ".join(["CONVEYOR", reason, *args])), Context(action="cancel"))
        assert isinstance(error, ConveyorError) and error.message


def test_every_script_has_a_header_naming_its_arguments_and_reply() -> None:
    for name in SCRIPT_NAMES:
        text = (LUA_DIR / f"{name}.lua").read_text()
        header = text.split("\n\n", 1)[0]
        assert header.startswith(f"-- {name}: "), name
        assert re.search(r"ARGV\[1\]\s+key prefix", header), name
        assert "-- Reply: " in header, name


async def test_the_library_loads_on_redis_with_every_command(redis_url: str) -> None:
    lib = library()
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Each piece once, each command's own text after the pieces it includes.
        pieces = re.findall(r"^-- ===== (\S+) =====$", lib.source, re.MULTILINE)
        assert len(pieces) == len(set(pieces))
        assert {p for p in pieces if "/" not in p} == {f"{name}.lua" for name in SCRIPT_NAMES}
        await lib.load(client)
        (listed,) = await client.function_list(library=lib.name)
        functions = dict(zip(listed[::2], listed[1::2], strict=True))[b"functions"]
        names = {dict(zip(f[::2], f[1::2], strict=True))[b"name"].decode() for f in functions}
        assert names == {lib.function(name) for name in SCRIPT_NAMES}
    finally:
        await client.aclose()


async def test_nothing_of_one_call_stays_for_the_next(redis_url: str) -> None:
    """The library's state lives as long as the library: each command starts afresh.
    A call under one key prefix, then under another, writes under its own; a call that
    fails half-way (a WRONGTYPE inside finish.lua, once its counter cache holds the
    queue's counts) leaves no cached counter behind: the next submit's count is written."""
    lib = library()
    client = aioredis.Redis.from_url(redis_url)
    store_a = JobStore(client, "pa", store_policy(Settings(key_prefix="pa")))
    store_b = JobStore(client, "pb", store_policy(Settings(key_prefix="pb")))
    try:
        a = await store_a.submit(new("q"))
        b = await store_b.submit(new("q"))
        assert (a.position, b.position) == (1, 1)
        assert await client.exists("pa:job:" + a.id, "pb:job:" + b.id) == 2
        assert not await client.exists("pa:job:" + b.id) and not await client.exists("pb:job:" + a.id)
        # A finish that fails half-way: the queue's run-time samples are not a list.
        await client.hset("pa:job:" + a.id, mapping={"state": "ACTIVE", "attempt": "1"})
        await client.set("pa:q:q:run-ms", "not a list")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lib.call(client, "finish", ["pa", *store_a.policy.args(), 0, "w", 1000, 0,
                                              a.id, "1", "completed", "r", -1, "", "", ""])
        waiting = int(await client.hget("pa:q:q", "WAITING") or 0)
        await store_a.submit(new("q"))
        assert int(await client.hget("pa:q:q", "WAITING") or 0) == waiting + 1
    finally:
        await client.aclose()


async def test_a_server_without_functions_is_refused_at_start_in_words(tmp_path: Path) -> None:
    """Redis before 7.0 has no FUNCTION command: the store says at start what it needs.
    (A real redis-server with the command renamed away stands for the older server.)"""
    proc, url = start_redis(tmp_path, extra=["--rename-command", "FUNCTION", ""])
    client = aioredis.Redis.from_url(url)
    try:
        store = JobStore(client, "old", store_policy(Settings(key_prefix="old")))
        with pytest.raises(RuntimeError, match=r"needs Redis 7\.0 or newer"):
            await store.load_scripts()
    finally:
        await client.aclose()
        proc.stop()


async def test_a_plain_clients_pipelined_submits_load_the_library_when_redis_lost_it(redis_url: str) -> None:
    """A client without the shared connection sends SubmitJobs' scripts as one pipeline
    (Library.call_many): after FUNCTION FLUSH the first reply says the library is
    missing, and the whole batch goes again once it is loaded, each job made once."""
    client = aioredis.Redis.from_url(redis_url)
    store = JobStore(client, "plain", store_policy(Settings(key_prefix="plain")))
    try:
        await client.function_flush()
        made = await store.submit_many([new("q") for _ in range(3)])
        assert [getattr(m, "position", None) for m in made] == [1, 2, 3]
        assert (await store.get_queue("q")).counts.waiting == 3
    finally:
        await client.aclose()
