"""When a waiting job is expected to start: from its place in line, the queue's
recent run times, and the slots that can serve the queue."""

from __future__ import annotations

import math

from conveyor.store.job_store import JobStore
from conveyor.store.records import JobRecord


async def estimate_start_ms(store: JobStore, job: JobRecord) -> int:
    """0 when there is nothing to go on (no run has ended in the queue yet)."""
    queue = await store.get_queue(job.queue, with_stats=True)
    mean_run = queue.stats.mean_run_ms
    if not mean_run or not job.position:
        return 0
    live_slots = sum(e.slots for e in await store.live_executors())
    slots = max(1, min(queue.concurrency, live_slots) if live_slots else queue.concurrency)
    # Jobs ahead start in waves of `slots`; this one starts when its wave does.
    waves = math.ceil(job.position / slots)
    return await store.now_ms() + int(waves * mean_run)
