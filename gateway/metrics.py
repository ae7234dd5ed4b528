"""The gateway's Prometheus metrics, on CONVEYOR_GATEWAY_METRICS_ADDR (`/metrics`).

- Per process: gRPC calls by method and code, unary handling time, jobs submitted by
  queue and kind (counted by one server interceptor, outermost, from the requests and
  responses it sees), and the store's PING round trip.
- From the store, at scrape time (read at most every CONVEYOR_METRICS_CACHE_SECONDS,
  a fixed number of small reads per queue, never by scanning jobs): each queue's jobs
  per state, paused, concurrency, health, jobs ended since its first job, and its
  wait and run time histograms; the live executors' slots. These are the cluster's
  figures: every gateway reports the same ones (aggregate them with max, not sum).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from conveyor.metrics_common import (
    LATENCY_BUCKETS,
    HttpEndpoint,
    Response,
    metrics_response,
    parse_addr,
    probe_redis,
    redis_ping_histogram,
)
from conveyor.queue_stats import HISTOGRAM_BOUNDS_MS, assess, thresholds_of, with_counts
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore
from conveyor.store.records import State
from conveyor.v1 import job_service_pb2
from gateway.interceptors import WrappingInterceptor
from gateway.mapping import task_kind

log = structlog.get_logger("gateway.metrics")

SUBMIT_JOB = "/conveyor.v1.JobService/SubmitJob"
SUBMIT_JOBS = "/conveyor.v1.JobService/SubmitJobs"
#: Waiting jobs per queue looked at for the health gauge on /metrics (GetQueue: 50).
METRICS_HEAD_JOBS = 10


def _code_name(code: Any) -> str:
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return "UNKNOWN"


class MetricsInterceptor(WrappingInterceptor):
    """Counts every call by method and code and times the unary ones; counts the jobs
    SubmitJob/SubmitJobs made (not those answered as existing). Outermost: it sees the
    code the error interceptor set."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self.m = metrics

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        m, name = self.m, method.lstrip("/")
        counted = m.count_submitted if method in (SUBMIT_JOB, SUBMIT_JOBS) else None
        timing = m.handling.labels(name)
        handled: dict[str, Any] = {}  # code -> its series (label lookups once each)

        async def run(inner: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext, unary: bool) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async with contextlib.aclosing(result) as messages:
                        async for message in messages:
                            await context.write(message)
                    result = None
                elif inspect.isawaitable(result):
                    result = await result
                code = _code_name(context.code())
                if counted is not None and code == "OK":
                    counted(request, result)
                return result
            except grpc.aio.AbortError:
                code = _code_name(context.code())
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                series = handled.get(code)
                if series is None:
                    series = handled[code] = m.handled.labels(name, code)
                series.inc()
                if unary:
                    timing.observe(time.perf_counter() - started)

        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await run(uu, request, context, True)

            return grpc.unary_unary_rpc_method_handler(unary_unary, deserialize, serialize)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> None:
                await run(us, request, context, False)

            return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await run(su, requests, context, True)

            return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
        if handler.stream_stream is not None:
            ss = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
                await run(ss, requests, context, False)

            return grpc.stream_stream_rpc_method_handler(stream_stream, deserialize, serialize)
        return handler


class StoreCollector(Collector):
    """The store's per-queue figures, as of the last refresh()."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._families: list[Metric] = []
        self._read_at = -1e9
        self._lock = asyncio.Lock()

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self.settings.metrics_cache_seconds:
                return
            self._families = await self._read()
            self._read_at = time.monotonic()

    async def _read(self) -> list[Metric]:
        store = self.store
        queues = await store.list_queues()
        names = [q.name for q in queues]
        insights = await store.queue_insights(names, head=METRICS_HEAD_JOBS)
        histograms = await store.queue_histograms(names)
        jobs = GaugeMetricFamily("conveyor_queue_jobs", "Jobs of the queue in each state now (store counters).",
                                 labels=["queue", "state"])
        paused = GaugeMetricFamily("conveyor_queue_paused", "1 while the queue is paused.", labels=["queue"])
        concurrency = GaugeMetricFamily("conveyor_queue_concurrency", "Jobs of the queue that may run at once.",
                                        labels=["queue"])
        health = GaugeMetricFamily("conveyor_queue_health",
                                   "The queue's health verdict: 1 HEALTHY, 2 DEGRADED, 3 UNHEALTHY (see GetQueue).",
                                   labels=["queue"])
        ended = CounterMetricFamily("conveyor_queue_jobs_ended",
                                    "Jobs of the queue that reached a final state since its first job (store).",
                                    labels=["queue", "state"])
        wait = HistogramMetricFamily("conveyor_queue_wait_seconds",
                                     "Time from entering the line to starting, per attempt (store).", labels=["queue"])
        run = HistogramMetricFamily("conveyor_queue_run_seconds",
                                    "Time from starting to ending, per attempt (store).", labels=["queue"])
        thresholds = thresholds_of(self.settings)
        for q, ins, hist in zip(queues, insights, histograms, strict=True):
            c = q.counts
            for state in State:
                jobs.add_metric([q.name, state.value.lower()], getattr(c, state.value.lower()))
            paused.add_metric([q.name], 1.0 if q.paused else 0.0)
            concurrency.add_metric([q.name], q.concurrency)
            verdict, _ = assess(with_counts(q, ins), ins, thresholds)
            health.add_metric([q.name], int(verdict))
            for state in (State.COMPLETED, State.FAILED, State.CANCELLED):
                ended.add_metric([q.name, state.value.lower()], ins.totals.get(state.value, 0))
            for family, letter in ((wait, "w"), (run, "r")):
                buckets: list[tuple[str, float]] = []
                total = 0
                for i, bound in enumerate(HISTOGRAM_BOUNDS_MS, start=1):
                    total += hist.get(f"{letter}:{i}", 0)
                    buckets.append((repr(bound / 1000), total))
                total += hist.get(f"{letter}:{len(HISTOGRAM_BOUNDS_MS) + 1}", 0)
                buckets.append(("+Inf", total))
                family.add_metric([q.name], buckets, hist.get(f"{letter}:sum", 0) / 1000)
        slots = GaugeMetricFamily("conveyor_live_executor_slots",
                                  "Slots the live executors registered with the store, in all.")
        slots.add_metric([], insights[0].capacity if insights else await self._capacity())
        return [jobs, paused, concurrency, health, ended, wait, run, slots]

    async def _capacity(self) -> int:
        return int(await self.store.client.get(self.store.keys.capacity) or 0)


class GatewayMetrics:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        addr = parse_addr(settings.gateway_metrics_addr)
        assert addr is not None, "GatewayMetrics needs CONVEYOR_GATEWAY_METRICS_ADDR"
        self.registry = CollectorRegistry()
        self.handled = Counter("conveyor_grpc_server_handled", "gRPC calls the gateway completed, by method and code.",
                               ["method", "code"], registry=self.registry)
        self.handling = Histogram("conveyor_grpc_server_handling_seconds",
                                  "Time the gateway took to answer a unary call (streams are not timed).",
                                  ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.submitted = Counter("conveyor_jobs_submitted", "Jobs made through SubmitJob and SubmitJobs, "
                                 "by queue and kind (a request id answered as existing is not counted).",
                                 ["queue", "kind"], registry=self.registry)
        self.redis = redis_ping_histogram(self.registry)
        self.collector = StoreCollector(store, settings)
        self.registry.register(self.collector)
        self.store = store
        self.endpoint = HttpEndpoint(addr, {"/metrics": self._metrics}, name="gateway-metrics")
        self.interceptor = MetricsInterceptor(self)
        self._probe: asyncio.Task[None] | None = None

    def count_submitted(self, request: Any, response: Any) -> None:
        if isinstance(response, job_service_pb2.SubmitJobResponse):
            if isinstance(request, job_service_pb2.SubmitJobRequest) and not response.existing:
                self.submitted.labels(request.queue or "default", task_kind(request)).inc()
        elif isinstance(response, job_service_pb2.SubmitJobsResponse) and isinstance(
            request, job_service_pb2.SubmitJobsRequest
        ):
            made: dict[tuple[str, str], int] = {}
            for req, res in zip(request.requests, response.results, strict=False):
                if res.id and not res.existing:
                    key = (req.queue or "default", task_kind(req))
                    made[key] = made.get(key, 0) + 1
            for (queue, kind), n in made.items():
                self.submitted.labels(queue, kind).inc(n)

    async def _metrics(self) -> Response:
        try:
            await self.collector.refresh()
        except Exception as exc:  # the process's own figures are still worth serving
            log.warning("metrics: store figures unavailable", error=str(exc)[:200])
        return metrics_response(self.registry)

    async def start(self) -> None:
        await self.endpoint.start()
        self._probe = asyncio.create_task(probe_redis(self.store.client, self.redis), name="redis-probe")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.endpoint.close()
