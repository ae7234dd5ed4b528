"""The SDK's JobWaiter against the real gateway and executor: many jobs' ends learned
from one WatchQueue stream (no WaitJob per job), WaitJob for what the stream cannot
vouch for, a stream resumed across a gateway restart, and a real gap (the queue's
event stream trimmed while the gateway was down: OUT_OF_RANGE on resume) answered by
WaitJob instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from conveyor.store.keys import Keys
from conveyor.v1 import job_pb2
from conveyor_client import AsyncConveyorClient
from conveyor_client.waiter import JobEnd, JobWaiter
from tests.support.processes import Stack, wait_for

COMPLETED, FAILED = job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition of the waiter, checked every 20 ms, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def noop(sleep: str = "0s", *, fail: bool = False) -> dict[str, object]:
    task: dict[str, object] = {"sleep": sleep}
    if fail:
        task["fail_first_attempts"] = 100
    return {"noop": task, "max_attempts": 1}


async def test_a_waiter_learns_every_end_of_many_jobs_from_its_one_stream(stack: Stack) -> None:
    async with AsyncConveyorClient(stack.grpc_target) as client, JobWaiter(client, "waiter-many") as waiter:
        kinds = ["instant"] * 40 + ["slow"] * 10 + ["failing"] * 10
        requests = {"instant": noop(), "slow": noop("0.3s"), "failing": noop(fail=True)}
        submitted = await asyncio.gather(*(waiter.submit(requests[k]) for k in kinds))
        ends = await asyncio.gather(*(waiter.wait(s.id, timeout=30) for s in submitted))

        for kind, sub, end in zip(kinds, submitted, ends, strict=True):
            assert end.job_id == sub.id
            if kind == "failing":
                assert end.state == FAILED and end.error is not None and end.error.message
            else:
                assert end.state == COMPLETED and end.completed and end.error is None
            assert end.attempt == 1
        # A batch (SubmitJobs, one call) too, into the waiter's queue whatever it says.
        batch = await waiter.submit_many([{**noop(), "queue": "elsewhere"}] * 20)
        assert len(batch.results) == 20 and not batch.errors
        batch_ends = await asyncio.gather(*(waiter.wait(r.id, timeout=30) for r in batch.results))
        assert all(end.state == COMPLETED for end in batch_ends)
        assert (await client.get(batch.results[0].id)).queue == "waiter-many"
        # Every one of them from the stream: not one WaitJob.
        assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (80, 0)
        # What the stream said is what the job's record says.
        job = await client.get(submitted[-1].id)
        assert JobEnd.of_job(job) == ends[-1]

        assert waiter.kept == 0  # every end it held has been asked for

        # The ends of other clients' jobs of the queue are not kept (WaitJob would
        # answer for them); the ends of its own are, until asked for.
        async def read_all() -> None:
            """Until the waiter has read every event of the queue so far."""
            newest = (await client.queue("waiter-many")).last_sequence
            await until(lambda: (waiter.last_sequence or 0) >= newest, 30, f"the waiter to read event {newest}")

        others = [await client.submit(noop(), queue="waiter-many") for _ in range(10)]
        await asyncio.gather(*(client.wait(o.id, timeout=30) for o in others))
        await read_all()
        assert waiter.kept == 0
        mine = [await waiter.submit(noop()) for _ in range(5)]
        await asyncio.gather(*(client.wait(m.id, timeout=30) for m in mine))
        await read_all()
        assert waiter.kept == 5
        ends = [await waiter.wait(m.id, timeout=30) for m in mine]
        assert all(end.state == COMPLETED for end in ends) and waiter.kept == 0
        assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (85, 0)

        # A second wait for a job already told is answered too (by WaitJob, at once).
        again = await waiter.wait(submitted[0].id, timeout=10)
        assert again.state == COMPLETED and waiter.answered_by_wait_job == 1


async def test_a_job_the_waiter_cannot_vouch_for_is_asked_of_wait_job(stack: Stack) -> None:
    async with AsyncConveyorClient(stack.grpc_target) as client:
        before = await client.submit(noop("0.5s"), queue="waiter-elsewhere")  # before the waiter's stream
        async with JobWaiter(client, "waiter-elsewhere") as waiter:
            end = await waiter.wait(before.id, timeout=30)
            assert end.state == COMPLETED and end.job_id == before.id
            assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (0, 1)

            # A job still running when the wait's time is up: TimeoutError, either way.
            slow = await waiter.submit(noop("5s"))
            with pytest.raises(TimeoutError):
                await waiter.wait(slow.id, timeout=0.3)
            long_ago = await client.submit(noop("5s"), queue="waiter-elsewhere")
            with pytest.raises(TimeoutError):
                await waiter.wait(long_ago.id, timeout=0.3)  # not through the waiter: WaitJob's time is up


async def test_a_waiter_resumes_across_a_gateway_restart_and_asks_wait_job_after_a_gap(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    gateway = stack.start_gateway()
    stack.start_executor()
    keys, queue = Keys(stack.prefix), "waiter-restart"

    def ended(job_id: str) -> bool:
        with stack.redis() as r:
            return bool(r.hget(keys.job(job_id), "state") == b"COMPLETED")

    async with AsyncConveyorClient(stack.grpc_target) as client, JobWaiter(client, queue) as waiter:
        first = await waiter.submit(noop())
        assert (await waiter.wait(first.id, timeout=30)).state == COMPLETED  # the stream has a sequence now

        # 1. The gateway restarts while a job runs, and the job ends while it is down:
        #    the stream is resumed after its last event and the end comes by it.
        running = await waiter.submit(noop("1s"))
        gateway.stop()
        await asyncio.to_thread(wait_for, lambda: ended(running.id), 30, "the job's end with the gateway down")
        gateway = await asyncio.to_thread(stack.start_gateway)
        end = await waiter.wait(running.id, timeout=30)
        assert end.state == COMPLETED
        assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (2, 0)

        # 2. Again, but the queue's events after the waiter's last one are trimmed
        #    away while the gateway is down (a queue keeps its newest 100,000): the
        #    resume is refused (OUT_OF_RANGE), and the job is asked of WaitJob instead.
        other_gateway = await asyncio.to_thread(stack.start_second_gateway)
        lost = await waiter.submit(noop("1s"))
        gateway.stop()
        await asyncio.to_thread(wait_for, lambda: ended(lost.id), 30, "the job's end with the gateway down")
        async with AsyncConveyorClient(other_gateway) as elsewhere:
            later = await elsewhere.submit(noop(), queue=queue)
            await elsewhere.wait(later.id, timeout=30)
        with stack.redis() as r:
            # Only the newest event is kept (the later job's end): `lost`'s end is gone.
            r.xtrim(keys.queue_events(queue), maxlen=1, approximate=False)
        await asyncio.to_thread(stack.start_gateway)
        end = await waiter.wait(lost.id, timeout=30)
        assert end.state == COMPLETED and end.job_id == lost.id
        assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (2, 1)

        # And the waiter follows the queue again from then on (its stream open anew).
        await until(lambda: waiter.following, 30, "the waiter's stream open again")
        after = await waiter.submit(noop())
        assert (await waiter.wait(after.id, timeout=30)).state == COMPLETED
        assert (waiter.answered_by_stream, waiter.answered_by_wait_job) == (3, 1)
