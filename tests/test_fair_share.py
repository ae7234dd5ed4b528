"""Tenants sharing a queue, against a real Redis: fair share within a priority
(weighted), exact positions under it, the per-tenant running limit, a tenant's own
pause and concurrency in a queue, and the per-tenant counters and lines the store
keeps for them."""

from __future__ import annotations

import uuid
from dataclasses import replace

from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Priority, State
from conveyor.transport import kind_queue
from tests.test_store import register


def job(owner: str, **kw: object) -> NewJob:
    base = NewJob(id=uuid.uuid4().hex, queue="q", owner=owner, priority=Priority.NORMAL, max_attempts=3,
                  timeout_ms=60_000, run_at_ms=0, spec=b"", kind="noop")
    return replace(base, **kw)  # type: ignore[arg-type]


async def submit(store: JobStore, owner: str, n: int, **kw: object) -> list[str]:
    jobs = [job(owner, **kw) for _ in range(n)]
    for outcome in await store.submit_many(jobs):
        assert not isinstance(outcome, Exception), outcome
    return [j.id for j in jobs]


async def line(store: JobStore, queue: str = "q") -> list[str]:
    return [m.decode() for m in await store.client.zrange(store.keys.queue_index(queue, "waiting"), 0, -1)]


async def handed_over(store: JobStore) -> list[str]:
    """The job ids admission handed over so far, in order (the messages in the noop queue)."""
    queue = f"{store.policy.transport_namespace}:{kind_queue('noop')}"
    mids = [m.decode() for m in await store.client.lrange(queue, 0, -1)]
    return [mid.rsplit("-", 2)[0] for mid in mids]


async def assert_lines_match(store: JobStore, queue: str = "q") -> None:
    """Invariant: the tenants' own lines are the queue's line split by tenant, the
    'tenants' set holds each tenant by its first job's place, and each tenant's
    counters in the queue equal its jobs in each state."""
    keys = store.keys
    waiting = dict(await store.client.zrange(keys.queue_index(queue, "waiting"), 0, -1, withscores=True))
    ids = [m.decode() for m in await store.client.zrange(keys.queue_index(queue, "jobs"), 0, -1)]
    jobs = [j for j in await store.get_many(ids) if j is not None]
    owners = {j.owner for j in jobs}
    heads = dict(await store.client.zrange(keys.queue_index(queue, "tenants"), 0, -1, withscores=True))
    split: dict[bytes, float] = {}
    for owner in owners:
        own = dict(await store.client.zrange(keys.tenant_line(queue, owner), 0, -1, withscores=True))
        split.update(own)
        assert {j.id.encode() for j in jobs if j.owner == owner and j.id.encode() in waiting} == set(own)
        if own:
            assert heads[owner.encode()] == min(own.values())
        else:
            assert owner.encode() not in heads
        share = await store.get_queue(queue, tenant=owner)
        for state in State:
            assert getattr(share.counts, state.value.lower()) == sum(
                1 for j in jobs if j.owner == owner and j.state is state), (owner, state)
    assert split == waiting


async def test_a_tenants_new_job_goes_in_at_the_head_not_behind_another_tenants_backlog(store: JobStore) -> None:
    await submit(store, "a", 300)
    (b,) = await submit(store, "b", 1)
    got = await store.get(b)
    assert got.position <= 2, f"b's job is at {got.position}, behind a's backlog"
    # Positions are exact: they are the order admission hands jobs over in.
    await register(store, 4)
    await store.dispatch()
    assert b in (await handed_over(store))[:2]
    await assert_lines_match(store)


async def test_tenants_take_turns_and_one_tenant_alone_is_fifo(store: JobStore) -> None:
    a = await submit(store, "a", 5)
    b = await submit(store, "b", 5)
    c = await submit(store, "c", 2)
    order = await line(store)
    # Round by round: each tenant's first job, then each one's second, ... (c has two).
    rounds = [{a[0], b[0], c[0]}, {a[1], b[1], c[1]}] + [{a[r], b[r]} for r in range(2, 5)]
    at = 0
    for turn in rounds:
        assert set(order[at : at + len(turn)]) == turn
        at += len(turn)
    for own in (a, b, c):
        assert [i for i in order if i in own] == own  # FIFO within a tenant
    # Positions are the line's order, 1-based.
    records = await store.get_many(order)
    assert [r.position for r in records if r] == list(range(1, len(order) + 1))
    await assert_lines_match(store)


async def test_a_tenant_of_weight_two_gets_two_turns_to_one(store: JobStore) -> None:
    heavy = await submit(store, "heavy", 40, weight=2)
    light = await submit(store, "light", 40)
    first = (await line(store))[:30]
    assert 19 <= sum(1 for i in first if i in heavy) <= 21
    assert 9 <= sum(1 for i in first if i in light) <= 11


async def test_priorities_come_before_fair_share(store: JobStore) -> None:
    await submit(store, "a", 20)
    (urgent,) = await submit(store, "b", 1, priority=Priority.CRITICAL)
    (bulk,) = await submit(store, "c", 1, priority=Priority.BULK)
    order = await line(store)
    assert order[0] == urgent and order[-1] == bulk


async def test_a_line_made_before_fair_share_keeps_its_order(store: JobStore) -> None:
    old = await submit(store, "a", 10)
    # As a store of the previous version left it: the places, but no fair-share state.
    for key in await store.client.keys(store.keys.queue_index("q", "fair:*")):
        await store.client.delete(key)
    (new_a,) = await submit(store, "a", 1)
    (new_b,) = await submit(store, "b", 1)
    order = await line(store)
    assert order[:10] == old and set(order[10:]) == {new_a, new_b}


async def test_a_job_back_in_line_after_its_line_emptied_goes_to_the_front(store: JobStore) -> None:
    await register(store, 1)
    (first,) = await submit(store, "a", 1)
    await store.dispatch()  # handed over: the line is empty now
    later = await submit(store, "b", 3)  # a fresh start of the clocks
    # The hand-over is lost; the job goes back in line: in front, as it was first.
    await store.client.zadd(store.keys.inflight, {first: 0})
    requeued, _ = await store.reap(b"lost")
    assert requeued == 1
    assert await line(store) == [first, *later]
    await assert_lines_match(store)


async def test_a_tenant_at_its_running_limit_holds_nobody_else_up(store: JobStore) -> None:
    store.policy = replace(store.policy, tenant_max_running=3)
    await register(store, 8)
    # a's jobs are all ahead of b's (a higher priority), more of them than admission looks at.
    await submit(store, "a", 120, priority=Priority.HIGH)
    b = await submit(store, "b", 4)
    await store.dispatch()
    handed = await handed_over(store)
    assert sum(1 for i in handed if i not in b) == 3, "a runs no more than its limit"
    assert handed[3:] == b[:3], "b's jobs start (as many as its limit) although 120 of a's are ahead of them"
    # A slot of a's frees: a's next job goes, not b's fourth.
    first = handed[0]
    claim = await store.claim(first, 1, "ex", 60_000)
    assert not isinstance(claim, str)
    await store.complete(first, 1, b"ok")
    handed = await handed_over(store)
    assert len(handed) == 7 and handed[-1] not in b
    await assert_lines_match(store)


async def test_a_tenants_pause_and_concurrency_in_a_queue_are_its_own(store: JobStore) -> None:
    await register(store, 8)
    a = await submit(store, "a", 5)
    b = await submit(store, "b", 5)
    await store.update_queue("q", {"paused": 1}, tenant="a")
    share = await store.get_queue("q", tenant="a")
    assert share.paused and share.counts.waiting == 5
    assert not (await store.get_queue("q", tenant="b")).paused
    assert not (await store.get_queue("q")).paused
    await store.dispatch()
    assert set(await handed_over(store)) == set(b), "a's jobs wait; b's run"
    await store.update_queue("q", {"paused": 0, "concurrency": 2}, tenant="a")
    await store.dispatch()
    assert len(set(await handed_over(store)) & set(a)) == 2
    assert (await store.get_queue("q", tenant="a")).concurrency == 2
    await assert_lines_match(store)


async def test_a_queue_a_tenant_has_nothing_in_does_not_exist_for_it(store: JobStore) -> None:
    await submit(store, "a", 1)
    await submit(store, "b", 1, queue="b-only")
    assert [q.name for q in await store.list_queues(tenant="a")] == ["q"]
    assert {q.name for q in await store.list_queues()} == {"q", "b-only"}


async def test_cancel_and_admission_keep_the_tenant_lines_whole(store: JobStore) -> None:
    await register(store, 3)
    a = await submit(store, "a", 4)
    b = await submit(store, "b", 4)
    await store.cancel(a[0], b"")
    await store.cancel(b[3], b"")
    await store.dispatch()
    await assert_lines_match(store)
    assert (await store.get_queue("q", tenant="a")).counts.cancelled == 1


async def pages(store: JobStore, page_size: int, **query: object) -> list[list[str]]:
    """Every page of a ListJobs query, as job ids."""
    out: list[list[str]] = []
    token = ""
    while True:
        jobs, token = await store.list_jobs(page_size=page_size, page_token=token, **query)  # type: ignore[arg-type]
        out.append([j.id for j in jobs])
        if not token:
            return out
        assert len(out) < 50, "paging does not end"


async def test_a_tenants_pages_are_its_own_jobs_whatever_others_hold(store: JobStore) -> None:
    await submit(store, "big", 300)
    mine = await submit(store, "small", 3)
    # Waiting, in line order, two per page: full pages, from the tenant's own line.
    got = await pages(store, 2, queue="q", state=State.WAITING, owner="small")
    assert got[0] == mine[:2] and [i for page in got for i in page] == mine
    # In all, and of a kind in a queue (newest first; these were made in the same ms).
    for query in ({}, {"queue": "q", "kind": "noop"}):
        got = await pages(store, 2, owner="small", **query)
        assert len(got[0]) == 2 and sorted(i for page in got for i in page) == sorted(mine)
    # Ended ones: a tenant's FAILED jobs, from its own index.
    await store.cancel(mine[1], b"")
    assert await pages(store, 5, queue="q", state=State.CANCELLED, owner="small") == [[mine[1]]]
    assert await pages(store, 5, queue="q", state=State.CANCELLED, owner="big") == [[]]


async def test_a_tenants_running_jobs_are_listed_from_the_queues_own(store: JobStore) -> None:
    """A tenant's ACTIVE jobs have no index of its own (TENANT_STATE_INDEXES): they are
    read from the queue's running jobs, every page holding only the tenant's."""
    big, small = await submit(store, "big", 6), await submit(store, "small", 2)
    await register(store, 8)
    for h in await store.dispatch(8):
        assert not isinstance(await store.claim(h.job_id, h.attempt, "ex", 60_000), str)
    assert (await store.get_queue("q")).counts.active == 8
    for owner, ids in (("small", small), ("big", big)):
        got = await pages(store, 1, queue="q", state=State.ACTIVE, owner=owner)
        assert sorted(i for page in got for i in page) == sorted(ids), owner
    assert not await store.client.exists(store.keys.queue_index("q", "active:owner:small"))
    # Once they end, each tenant's are in its own index of that state again.
    for i in small:
        await store.complete(i, 1, b"")
    completed = await pages(store, 5, queue="q", state=State.COMPLETED, owner="small")
    assert sorted(i for page in completed for i in page) == sorted(small)
    await assert_lines_match(store)


async def test_listing_by_label_finds_one_users_jobs(store: JobStore) -> None:
    u42 = [j.id for j in [job("acme", labels={"userId": "u42", "plan": "pro"}) for _ in range(3)]]
    for i in u42:
        await store.submit(job("acme", id=i, labels={"userId": "u42", "plan": "pro"}))
    await submit(store, "acme", 5, labels={"userId": "u7"})
    await submit(store, "other", 5, labels={"userId": "u42"})  # another tenant's u42
    got = await pages(store, 2, owner="acme", labels={"userId": "u42"})
    assert [len(p) for p in got][:2] == [2, 1] and sorted(i for p in got for i in p) == sorted(u42)
    # Several labels: every one must match.
    assert sorted(i for p in await pages(store, 10, owner="acme", labels={"userId": "u42", "plan": "pro"})
                  for i in p) == sorted(u42)
    assert await pages(store, 10, owner="acme", labels={"userId": "u42", "plan": "free"}) == [[]]
    # A deleted job leaves the label's index.
    await store.cancel(u42[0], b"")
    assert await store.clean_queue("q", State.CANCELLED, 10**15, 10) == 1
    left = await pages(store, 10, owner="acme", labels={"userId": "u42"})
    assert sorted(i for p in left for i in p) == sorted(u42[1:])
    index = store.keys.owner_label("acme", "userId", "u42")
    assert await store.client.zcard(index) == 2


async def test_a_tenants_clean_and_retry_failed_touch_only_its_jobs(store: JobStore) -> None:
    a = await submit(store, "a", 2)
    b = await submit(store, "b", 2)
    for i in a + b:
        await store.cancel(i, b"")
    assert await store.clean_queue("q", State.CANCELLED, 10**15, 10, tenant="a") == 2
    assert (await store.get_queue("q")).counts.cancelled == 2
    assert (await store.get_queue("q", tenant="b")).counts.cancelled == 2
