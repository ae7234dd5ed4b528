"""The executor's worker processes, counted (see executor/health_http.py for the
endpoint their supervisor serves them on): jobs started / completed / failed /
retried / cancelled by queue and kind, attempt run time, slots busy and free, the
browser pool's browsers, contexts, launches, crashes and recycles (read from the pool
every second), and the store's PING round trip. Written to prometheus_client's
multiprocess directory (PROMETHEUS_MULTIPROC_DIR, set by the supervisor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from prometheus_client import Counter, Gauge, Histogram

from conveyor.metrics_common import probe_redis, redis_ping_histogram
from conveyor.settings import Settings
from conveyor.store.records import Claim, State
from executor.health_http import MULTIPROC_ENV
from executor.runtime import ExecutorRuntime

#: Buckets (seconds) of the attempt run time: 10 ms to an hour.
RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
SAMPLE_SECONDS = 1.0


class WorkerMetrics:
    """A worker process's metrics (written to the multiprocess directory)."""

    def __init__(self) -> None:
        labels = ["queue", "kind"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=None)

        self.started = counter("conveyor_jobs_started", "Attempts the executor claimed and started.")
        self.completed = counter("conveyor_jobs_completed", "Jobs that completed (their attempt's end).")
        self.failed = counter("conveyor_jobs_failed", "Jobs that failed for good (attempts exhausted or not "
                              "retryable) at the end of an attempt.")
        self.retried = counter("conveyor_jobs_retried", "Attempts that failed and were given another (DELAYED).")
        self.cancelled = counter("conveyor_jobs_cancelled", "Running jobs stopped by a cancel.")
        self.run = Histogram("conveyor_job_run_seconds", "An attempt's time in the executor, claimed to finished.",
                             labels, buckets=RUN_BUCKETS, registry=None)
        self.busy = Gauge("conveyor_executor_slots_busy", "Slots running a job now (sampled every second).",
                          registry=None,
                          multiprocess_mode="livesum")
        self.free = Gauge("conveyor_executor_slots_free", "Slots free now.", registry=None,
                          multiprocess_mode="livesum")
        self.browsers = Gauge("conveyor_browser_pool_browsers", "Chromium processes the pools run now.",
                              registry=None, multiprocess_mode="livesum")
        self.contexts = Gauge("conveyor_browser_pool_contexts", "Jobs' browser contexts open now.",
                              registry=None, multiprocess_mode="livesum")
        self.launches = Counter("conveyor_browser_launches", "Browsers launched.", registry=None)
        self.crashes = Counter("conveyor_browser_crashes", "Browsers that crashed or disconnected.", registry=None)
        self.recycles = Counter("conveyor_browser_recycles", "Browsers retired after serving their contexts.",
                                registry=None)
        self.redis = redis_ping_histogram(None)


class _JobSeries:
    """One queue and kind's series (prometheus_client's label lookup costs more than the
    increment itself: it is done once per queue and kind)."""

    def __init__(self, m: WorkerMetrics, queue: str, kind: str) -> None:
        self.started = m.started.labels(queue, kind)
        self.run = m.run.labels(queue, kind)
        self.ended = {State.COMPLETED: m.completed.labels(queue, kind), State.FAILED: m.failed.labels(queue, kind),
                      State.DELAYED: m.retried.labels(queue, kind), State.CANCELLED: m.cancelled.labels(queue, kind)}


class ObservedRuntime(ExecutorRuntime):
    """The executor runtime, counted: what it starts and how each attempt ends."""

    def __init__(self, settings: Settings, *, worker_index: int = 0) -> None:
        super().__init__(settings, worker_index=worker_index)
        self.metrics = WorkerMetrics()
        self._started_at: dict[int, float] = {}
        self._sampler: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._pool_seen = (0, 0, 0)
        self._series: dict[tuple[str, str], _JobSeries] = {}

    async def start(self) -> None:
        await super().start()
        self.metrics.busy.set(0)
        self.metrics.free.set(self.slots)
        self._sampler = asyncio.create_task(self._sample(), name="metrics-sampler")
        self._probe = asyncio.create_task(probe_redis(self.store.client, self.metrics.redis), name="redis-probe")

    async def stop(self) -> None:
        for task in (self._sampler, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await super().stop()

    def _of(self, claim: Claim) -> _JobSeries:
        """The job series of the claim's queue and kind (label lookups done once each)."""
        key = (claim.queue, claim.kind)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _JobSeries(self.metrics, *key)
        return series

    async def _run_claimed(self, claim: Claim) -> None:
        self._of(claim).started.inc()
        self._started_at[id(claim)] = time.perf_counter()
        try:
            await super()._run_claimed(claim)
        finally:
            self._started_at.pop(id(claim), None)

    async def _finish(self, claim: Claim, outcome: str, payload: bytes, retry_in_ms: int | None = None) -> State | None:
        state = await super()._finish(claim, outcome, payload, retry_in_ms)
        series = self._of(claim)
        started = self._started_at.get(id(claim))
        if started is not None:
            series.run.observe(time.perf_counter() - started)
        counter = series.ended.get(state) if state is not None else None
        if counter is not None:
            counter.inc()
        return state

    async def _sample(self) -> None:
        """The pool's figures, every second (its counters as increments)."""
        m = self.metrics
        while True:
            busy = len(self.running)
            m.busy.set(busy)
            m.free.set(max(0, self.slots - busy))
            pool = self._pool
            if pool is not None:
                stats = pool.stats()
                m.browsers.set(stats.browsers)
                m.contexts.set(stats.open_contexts)
                seen = (stats.launches, stats.crashes, int(getattr(pool, "recycles", 0)))
                for counter, now, before in zip((m.launches, m.crashes, m.recycles), seen, self._pool_seen,
                                                strict=True):
                    if now > before:
                        counter.inc(now - before)
                self._pool_seen = seen
            await asyncio.sleep(SAMPLE_SECONDS)


def worker_runtime(settings: Settings, worker_index: int) -> ExecutorRuntime:
    """The runtime a worker process runs: counted when its supervisor serves metrics."""
    if settings.executor_metrics_addr and os.environ.get(MULTIPROC_ENV):
        return ObservedRuntime(settings, worker_index=worker_index)
    return ExecutorRuntime(settings, worker_index=worker_index)


