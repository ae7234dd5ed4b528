"""The executor's finish batcher against a real Redis: attempts that end while a
round trip is under way go together in the next, and each caller gets its own
job's state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from conveyor.store.job_store import JobStore
from conveyor.store.records import Finish, State
from executor.finish_batcher import FinishBatcher
from tests.test_store import assert_counters_match, new, register


class CountingStore(JobStore):
    """The real store, counting its finish round trips (one script call each)."""

    round_trips = 0

    async def finish_many(self, finishes: Sequence[Finish]) -> list[State | None]:
        self.round_trips += 1
        return await super().finish_many(finishes)


async def test_concurrent_finishes_share_round_trips_and_each_gets_its_state(store: JobStore) -> None:
    counting = CountingStore(store.client, store.prefix, store.policy)
    jobs = [new() for _ in range(10)]
    for job in jobs:
        await store.submit(job)
    await register(store, 10)
    assert len(await store.dispatch(10)) == 10
    for job in jobs:
        assert not isinstance(await store.claim(job.id, 1, "ex", 10_000), str)

    batcher = FinishBatcher(counting)
    outcomes = ["completed" if i % 2 else "failed" for i in range(10)]
    states = await asyncio.gather(*(
        batcher.finish(Finish(job.id, 1, outcome, b"x")) for job, outcome in zip(jobs, outcomes, strict=True)
    ))
    assert states == [State.COMPLETED if o == "completed" else State.FAILED for o in outcomes]
    assert counting.round_trips < len(jobs)  # the first went alone; the rest waited for it, together
    # An attempt that no longer runs: None, like the store's own answer.
    assert await batcher.finish(Finish(jobs[0].id, 1, "completed", b"x")) is None
    await assert_counters_match(store, "default")
