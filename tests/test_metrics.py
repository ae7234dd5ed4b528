"""Prometheus metrics of both services, scraped after a known workload on a real stack
(a gateway and an executor of two worker processes on a real Redis): the numbers
match the workload (jobs per outcome, histogram counts, gRPC calls) and GetQueue
(queue depth); the executor's endpoint sums its workers, and keeps a killed worker's
counts while dropping its live gauges. A stream whose connection is reset under it is
a cancelled call, not an error."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.metrics_common import parse_addr
from conveyor.processes import descendants
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client._common import duration
from tests.support.cuttable_proxy import cuttable_proxy
from tests.support.grpc_helpers import TERMINAL, submit_request, unique_queue, wait_state
from tests.support.page_server import serve_page
from tests.support.processes import Stack, free_port, wait_for

pb, qpb = job_service_pb2, queue_service_pb2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels` (e.g. over pids)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def observed(make_stack: Callable[..., Stack]) -> Iterator[tuple[Stack, int, int]]:
    gw_port, ex_port = free_port(), free_port()
    s = make_stack(CONVEYOR_GATEWAY_METRICS_ADDR=f"127.0.0.1:{gw_port}",
                   CONVEYOR_EXECUTOR_METRICS_ADDR=f"127.0.0.1:{ex_port}",
                   CONVEYOR_EXECUTOR_PROCESSES="2", CONVEYOR_EXECUTOR_SLOTS="2",
                   CONVEYOR_MAX_CONCURRENT_BROWSERS="1", CONVEYOR_METRICS_CACHE_SECONDS="0")
    s.start_gateway()
    s.start_executor()
    yield s, gw_port, ex_port


@pytest.fixture
def page_port() -> Iterator[int]:
    """A page on loopback for the browser job."""
    with serve_page(b"<html><title>metrics</title><h1 id='x'>hello</h1></html>") as url:
        yield int(urlsplit(url).port or 0)


def test_metrics_addresses_are_loopback_unless_named() -> None:
    assert parse_addr("") is None
    assert parse_addr("9464") == ("127.0.0.1", 9464)
    assert parse_addr(":9464") == ("127.0.0.1", 9464)
    assert parse_addr("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_addr("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="host:port"):
        parse_addr("localhost:http")


def test_a_scrape_while_a_worker_creates_its_metrics_file_answers(observed: tuple[Stack, int, int]) -> None:
    stack, _, ex_port = observed
    wait_for(lambda: total(scrape(ex_port), "conveyor_executor_slots_free") == 4, 30, "the workers' slots")
    # A (re)started worker's file as it is the instant after it is made, before it is
    # sized: empty. In a restart that lasts microseconds; made here to last.
    (metrics_dir,) = (Path(stack.env["CONVEYOR_DATA_DIR"]) / "metrics").glob("executor-*")
    (metrics_dir / "counter_4242424.db").touch()
    assert total(scrape(ex_port), "conveyor_executor_slots_free") == 4


async def test_scraped_numbers_match_a_known_workload(observed: tuple[Stack, int, int], page_port: int) -> None:
    stack, gw_port, ex_port = observed
    q = unique_queue("metrics")
    plain = [submit_request({"queue": q, "noop": {}}) for _ in range(8)]
    retried = [submit_request({"queue": q, "maxAttempts": 2, "noop": {"failFirstAttempts": 1}}) for _ in range(2)]
    failed = [submit_request({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}}) for _ in range(2)]
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        ids = [r.id for r in (await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=plain + retried))).results]
        ids += [(await jobs.SubmitJob(req)).id for req in failed]
        # A repeat of a request id is not a new job, and a refused request is counted by its code.
        first = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}, "requestId": "same"}))
        again = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}, "requestId": "same"}))
        assert again.existing and again.id == first.id
        ids.append(first.id)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await jobs.SubmitJob(submit_request({"queue": "-bad", "noop": {}}))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # One running job cancelled by its executor, one browser job.
        long = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "60s"}}))
        await wait_state(jobs, long.id, {job_pb2.JOB_STATE_ACTIVE})
        await jobs.CancelJob(pb.CancelJobRequest(id=long.id))
        ids.append(long.id)
        page = f"http://127.0.0.1:{page_port}/"
        browser = await jobs.SubmitJob(submit_request({"queue": q, "browser": {"steps": [
            {"navigate": {"url": page}}, {"extract": {"target": {"selector": "#x"}, "key": "x"}}]}}))
        ids.append(browser.id)
        ended = {i: (await wait_state(jobs, i, TERMINAL, timeout=60)).state for i in ids}
        assert sorted(ended.values()).count(job_pb2.JOB_STATE_COMPLETED) == 12  # 8 + 2 retried + 1 + browser
        assert list(ended.values()).count(job_pb2.JOB_STATE_FAILED) == 2
        assert ended[long.id] == job_pb2.JOB_STATE_CANCELLED
        got = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue

    # Attempts: 15 jobs, 2 of them retried once: 17 started, each ended.
    attempts = 17
    gw = scrape(gw_port)
    assert value(gw, "conveyor_jobs_submitted_total", queue=q, kind="noop") == 14
    assert value(gw, "conveyor_jobs_submitted_total", queue=q, kind="browser") == 1
    for state in ("waiting", "delayed", "active", "completed", "failed", "cancelled"):
        assert value(gw, "conveyor_queue_jobs", queue=q, state=state) == getattr(got.counts, state), state
    assert value(gw, "conveyor_queue_jobs_ended_total", queue=q, state="completed") == 12
    assert value(gw, "conveyor_queue_jobs_ended_total", queue=q, state="failed") == 2
    assert value(gw, "conveyor_queue_jobs_ended_total", queue=q, state="cancelled") == 1
    assert value(gw, "conveyor_queue_wait_seconds_count", queue=q) == attempts
    assert value(gw, "conveyor_queue_wait_seconds_bucket", queue=q, le="+Inf") == attempts
    assert value(gw, "conveyor_queue_run_seconds_count", queue=q) == attempts
    # The cancelled job ran about a second or more before it was stopped.
    assert value(gw, "conveyor_queue_run_seconds_sum", queue=q) > 0
    assert value(gw, "conveyor_queue_paused", queue=q) == 0
    assert value(gw, "conveyor_queue_health", queue=q) == got.health
    method = "conveyor.v1.JobService/SubmitJob"
    assert value(gw, "conveyor_grpc_server_handled_total", method=method, code="OK") == 6
    assert value(gw, "conveyor_grpc_server_handled_total", method=method, code="INVALID_ARGUMENT") == 1
    assert value(gw, "conveyor_grpc_server_handling_seconds_count", method=method) == 7
    assert value(gw, "conveyor_grpc_server_handled_total", method="conveyor.v1.JobService/SubmitJobs", code="OK") == 1
    assert value(gw, "conveyor_grpc_server_handled_total", method="conveyor.v1.QueueService/GetQueue", code="OK") == 1
    assert value(gw, "conveyor_live_executor_slots") == 4

    def executor_settled() -> bool:
        ex = scrape(ex_port)
        probed = total(ex, "conveyor_redis_roundtrip_seconds_count") > 0
        return total(ex, "conveyor_executor_slots_busy") == 0 and probed

    wait_for(executor_settled, 15, "the executor's slots free and a Redis probe")
    ex = scrape(ex_port)
    noop = {"queue": q, "kind": "noop"}
    assert total(ex, "conveyor_jobs_started_total", **noop) == attempts - 1
    assert total(ex, "conveyor_jobs_started_total", queue=q, kind="browser") == 1
    assert total(ex, "conveyor_jobs_completed_total", **noop) == 11
    assert total(ex, "conveyor_jobs_completed_total", queue=q, kind="browser") == 1
    assert total(ex, "conveyor_jobs_failed_total", **noop) == 2
    assert total(ex, "conveyor_jobs_retried_total", **noop) == 2
    assert total(ex, "conveyor_jobs_cancelled_total", **noop) == 1
    assert total(ex, "conveyor_job_run_seconds_count", **noop) == attempts - 1
    assert total(ex, "conveyor_job_run_seconds_bucket", le="+Inf", **noop) == attempts - 1
    assert total(ex, "conveyor_executor_slots_free") == 4
    assert value(ex, "conveyor_executor_workers") == 2
    # The browser job's pool: one browser launched, its memory seen.
    wait_for(lambda: total(scrape(ex_port), "conveyor_browser_launches_total") >= 1, 10, "the pool's launch counted")
    ex = scrape(ex_port)
    assert total(ex, "conveyor_browser_pool_browsers") >= 1
    assert total(ex, "conveyor_browser_crashes_total") == 0
    pss = [v for (n, _), v in ex.items() if n == "conveyor_browser_pss_bytes"]
    assert pss and all(v > 10 * 2**20 for v in pss), pss  # a Chromium tree is tens of MiB
    assert all(v > 0 for (n, _), v in ex.items() if n == "conveyor_executor_worker_pss_bytes")
    wait_for(lambda: value(scrape(gw_port), "conveyor_redis_roundtrip_seconds_count") > 0, 10, "a gateway probe")

    # A worker killed: its counts stay in the sum, its live gauges go; it is restarted.
    workers = [p for p in descendants(stack.executors[0].pid) if _is_worker(p)]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: value(scrape(ex_port), "conveyor_executor_worker_restarts") == 1, 20, "the restart counted")
    wait_for(lambda: total(scrape(ex_port), "conveyor_executor_slots_free") == 4, 30, "the new worker's slots")
    ex = scrape(ex_port)
    assert total(ex, "conveyor_jobs_started_total", **noop) == attempts - 1
    assert total(ex, "conveyor_job_run_seconds_count", **noop) == attempts - 1


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"executor.worker" in f.read()
    except OSError:
        return False


async def test_a_watcher_whose_connection_is_reset_is_counted_cancelled_and_is_no_error(
    make_stack: Callable[..., Stack],
) -> None:
    """A connection reset under a stream (a network blip, a load balancer restarting)
    is what networks do; the gateway's next write to the stream fails. That is a
    cancelled call in the metrics, not an error in the gateway's log (an operator's
    alert)."""
    port = free_port()
    s = make_stack(CONVEYOR_GATEWAY_METRICS_ADDR=f"127.0.0.1:{port}", CONVEYOR_METRICS_CACHE_SECONDS="0")
    s.start_gateway()
    s.start_executor()
    method = "conveyor.v1.JobService/WatchJob"
    with cuttable_proxy(s.grpc_target) as proxy:
        async with (grpc.aio.insecure_channel(s.grpc_target) as channel,
                    grpc.aio.insecure_channel(proxy.address) as proxied):
            jobs, queues = JobServiceStub(channel), QueueServiceStub(channel)
            q = unique_queue()
            await queues.PauseQueue(qpb.PauseQueueRequest(queue=q))
            sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
            watch = JobServiceStub(proxied).WatchJob(pb.WatchJobRequest(id=sub.id))
            first = await asyncio.wait_for(watch.read(), 30)
            assert first.WhichOneof("kind") == "job", "the stream is open: it has the job's snapshot"
            proxy.cut()
            await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q))  # events for the cut stream
            # (WaitJob, not a watch: the cut stream is the one WatchJob call counted.)
            done = await jobs.WaitJob(pb.WaitJobRequest(id=sub.id, timeout=duration(30)), timeout=45)
            assert done.job.state == job_pb2.JOB_STATE_COMPLETED
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await asyncio.wait_for(watch.read(), 30)
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: total(scrape(port), "conveyor_grpc_server_handled_total", method=method) >= 1, 30,
             "the cut watch's call to end")
    codes = {dict(labels)["code"]: n for (name, labels), n in scrape(port).items()
             if name == "conveyor_grpc_server_handled_total" and ("method", method) in labels}
    assert codes == {"CANCELLED": 1}
    gateway = s.gateways[0].log().splitlines()
    assert not [line for line in gateway if '"level": "error"' in line or "Traceback" in line]
