"""Concurrent submits sharing round trips (gateway/submit_batcher.py), against a real
Redis: each caller gets its own job and its own refusal, in the order the store made
them; a lone submit goes at once; a caller gone before its batch left makes no job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest

from conveyor.errors import ConveyorError
from conveyor.store.job_store import JobStore
from conveyor.store.records import NewJob, Submitted
from gateway.submit_batcher import SubmitBatcher
from tests.test_store import new


class CountingStore(JobStore):
    """The real store, noting the size of each pipelined batch it is sent."""

    batches: list[int]

    async def submit_many(self, jobs: Sequence[NewJob], *, admit: bool = False) -> list[Submitted | ConveyorError]:
        self.batches.append(len(jobs))
        return await super().submit_many(jobs, admit=admit)


@pytest.fixture
def counting(store: JobStore) -> CountingStore:
    counted = CountingStore(store.client, store.prefix, store.policy)
    counted.batches = []
    return counted


async def test_concurrent_submits_share_round_trips_and_each_gets_its_own_answer(counting: CountingStore) -> None:
    batcher = SubmitBatcher(counting)
    queue = f"q{uuid.uuid4().hex[:6]}"
    plain = [new(queue) for _ in range(40)]
    same_request = [new(queue, request_id="once") for _ in range(5)]
    deduped = [replace(new(queue), dedup_key="k") for _ in range(5)]
    jobs = plain + same_request + deduped
    outcomes = await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)

    assert sum(counting.batches) == len(jobs) - 1 and max(counting.batches) > 1  # one went alone
    made = [o for o in outcomes[:40] if isinstance(o, Submitted)]
    assert [m.id for m in made] == [j.id for j in plain] and not any(m.existing for m in made)
    once = outcomes[40:45]
    assert all(isinstance(o, Submitted) for o in once)
    assert len({o.id for o in once if isinstance(o, Submitted)}) == 1
    assert [o.existing for o in once if isinstance(o, Submitted)] == [False, True, True, True, True]
    dedup = outcomes[45:]
    assert isinstance(dedup[0], Submitted)
    refused = [o for o in dedup[1:] if isinstance(o, ConveyorError)]
    assert len(refused) == 4 and {o.reason for o in refused} == {"DUPLICATE_JOB"}
    # Places in line as the store made them: 1..n, in the callers' order.
    waiting = [o for o in outcomes if isinstance(o, Submitted) and not o.existing]
    assert [o.position for o in waiting] == list(range(1, len(waiting) + 1))
    assert (await counting.get_queue(queue)).counts.waiting == len(waiting)


async def test_a_lone_submit_goes_at_once_and_a_caller_gone_before_its_batch_left_makes_no_job(
        counting: CountingStore) -> None:
    batcher = SubmitBatcher(counting)
    first = await batcher.submit(new())
    assert counting.batches == []  # alone: the plain submit, no pipeline
    lead, kept, gone = new(), new(), new()
    tasks = [asyncio.create_task(batcher.submit(j)) for j in (lead, kept, gone)]
    await asyncio.sleep(0)  # all three ran: `lead` on its way, the other two waiting for it
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r.id for r in results[:2] if isinstance(r, Submitted)] == [lead.id, kept.id]
    assert counting.batches == [1]
    found = await counting.get_many([first.id, lead.id, kept.id, gone.id])
    assert [j is not None for j in found] == [True, True, True, False]
