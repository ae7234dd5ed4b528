"""Queue statistics as the products ask for them, and the health verdict with its
issues: the rules (conveyor/queue_stats.py) on given figures, and GetQueue,
ListQueues and the CLI on real stacks (a paused queue, failures above the threshold,
a kind no live executor serves, a job stalled in line)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from conveyor.queue_stats import Health, Insights, Issue, Thresholds, assess, summarize, throughput_per_minute
from conveyor.store.records import QueueCounts, QueueRecord, QueueStats
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import TERMINAL, submit_request, unique_queue, wait_state
from tests.support.processes import Stack
from tests.test_cli import run_cli

pb, qpb = job_service_pb2, queue_service_pb2
NOW = 1_000 * 60_000 + 30_000  # half a minute into minute 1000
MINUTES = 60


def record(waiting: int = 0, paused: bool = False, completed: tuple[int, ...] = (), failed: tuple[int, ...] = (),
           wait_ms: tuple[int, ...] = (), run_ms: tuple[int, ...] = ()) -> QueueRecord:
    pad = (0,) * MINUTES
    return QueueRecord("q", paused, 16, QueueCounts(waiting=waiting),
                       stats=QueueStats((pad + completed)[-MINUTES:], (pad + failed)[-MINUTES:], wait_ms, run_ms))


def reasons(issues: list[Issue]) -> list[str]:
    return [i.reason for i in issues]


# ---- the rules ----------------------------------------------------------------------


def test_summary_rates_means_and_throughput() -> None:
    q = record(completed=(0, 30, 30), failed=(0, 0, 10), wait_ms=(10, 30), run_ms=(100, 200, 300))
    s = summarize(q, Insights(now_ms=NOW, totals={"COMPLETED": 500, "FAILED": 7}, cancelled_per_minute=(2, 1)))
    assert s.success_rate == pytest.approx(60 / 70) and s.failure_rate == pytest.approx(10 / 70)
    assert s.ended_last_hour == 70 and s.cancelled_last_hour == 3
    assert s.mean_wait_ms == 20 and s.mean_run_ms == 200
    assert s.totals == {"COMPLETED": 500, "FAILED": 7}
    # 70 jobs over the last 4.5 minutes (four whole ones and half the current one).
    assert s.throughput_per_minute == pytest.approx(70 / 4.5)
    assert summarize(record(), Insights(now_ms=NOW)).success_rate is None
    assert throughput_per_minute((), (), NOW) == 0


def test_verdicts_follow_the_thresholds() -> None:
    t = Thresholds(failure_rate_degraded=0.1, failure_rate_unhealthy=0.5, min_jobs=10, stall_seconds=60,
                   backlog_jobs=100)
    live = {"capacity": 8, "kind_capacity": {"noop": 8}}
    healthy = Insights(now_ms=NOW, **live)  # type: ignore[arg-type]
    assert assess(record(completed=(50,)), healthy, t) == (Health.HEALTHY, [])
    # Failures: 1 of 10 is DEGRADED, 5 of 10 UNHEALTHY, 5 of 9 too few to judge.
    assert assess(record(completed=(9,), failed=(1,)), healthy, t)[0] is Health.DEGRADED
    verdict, issues = assess(record(completed=(5,), failed=(5,)), healthy, t)
    assert verdict is Health.UNHEALTHY and reasons(issues) == ["HIGH_FAILURE_RATE"]
    assert "50% of the jobs that ended in the last hour failed (5 of 10)" in issues[0].message
    assert assess(record(completed=(4,), failed=(5,)), healthy, t)[0] is Health.HEALTHY
    # Paused: DEGRADED, and its waiting jobs are not called stalled.
    verdict, issues = assess(record(waiting=3, paused=True), Insights(
        now_ms=NOW, oldest_ready_ms=NOW - 3_600_000, head_kinds={"noop": 3}, **live), t)  # type: ignore[arg-type]
    assert verdict is Health.DEGRADED and reasons(issues) == ["PAUSED"]
    # No executor at all, or none for a kind at the head of the line.
    assert reasons(assess(record(waiting=2), Insights(now_ms=NOW), t)[1]) == ["NO_EXECUTOR"]
    verdict, issues = assess(record(waiting=5), Insights(
        now_ms=NOW, head_kinds={"noop": 2, "chat": 3}, **live), t)  # type: ignore[arg-type]
    assert verdict is Health.UNHEALTHY and reasons(issues) == ["NO_EXECUTOR"] and "'chat'" in issues[0].message
    # Stalled: UNHEALTHY when nothing ends, DEGRADED while jobs still do.
    stuck = Insights(now_ms=NOW, oldest_ready_ms=NOW - 61_000, head_kinds={"noop": 1}, **live)  # type: ignore[arg-type]
    verdict, issues = assess(record(waiting=1), stuck, t)
    assert verdict is Health.UNHEALTHY and reasons(issues) == ["STALLED"] and "waited 61 s" in issues[0].message
    assert assess(record(waiting=1, completed=(5,)), stuck, t)[0] is Health.DEGRADED
    # A backlog growing over the last minutes (sizes noted at each minute's first end).
    growing = Insights(now_ms=NOW, waiting_at={995: 100, 997: 150, 999: 400}, **live)  # type: ignore[arg-type]
    verdict, issues = assess(record(waiting=500, completed=(10, 10, 10, 10, 10)), growing, t)
    assert verdict is Health.DEGRADED and reasons(issues) == ["BACKLOG_GROWING"]
    assert "100 waiting 5 min ago, 500 now" in issues[0].message
    assert assess(record(waiting=90, completed=(10,)), growing, t)[0] is Health.HEALTHY  # under backlog_jobs
    shrinking = Insights(now_ms=NOW, waiting_at={996: 900}, **live)  # type: ignore[arg-type]
    assert assess(record(waiting=500, completed=(10,)), shrinking, t)[0] is Health.HEALTHY


# ---- on a real stack ------------------------------------------------------------------


async def test_stats_and_a_failure_rate_verdict_in_get_and_list(stack: Stack) -> None:
    q, bad = unique_queue("stats"), unique_queue("failing")
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        good = [submit_request({"queue": q, "noop": {"sleep": "0.05s"}}) for _ in range(8)]
        fail = [submit_request({"queue": q, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}}) for _ in range(2)]
        worse = [submit_request({"queue": bad, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}})
                 for _ in range(10)]
        ids = [r.id for r in (await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=good + fail + worse))).results]
        later = await jobs.SubmitJob(submit_request({"queue": q, "delay": "3600s", "noop": {}}))
        await jobs.CancelJob(pb.CancelJobRequest(id=later.id))
        for job_id in ids:
            await wait_state(jobs, job_id, TERMINAL)
        got = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue
        s = got.stats
        assert s.HasField("success_rate") and s.success_rate == pytest.approx(0.8)
        assert (s.completed_total, s.failed_total, s.cancelled_total) == (8, 2, 1)
        assert s.cancelled_last_hour == 1 and s.completed_last_hour == 8 and s.failed_last_hour == 2
        assert s.throughput_per_minute >= 10 / 5  # 10 ended within the last five minutes
        assert s.run_time_mean.ToMilliseconds() >= 50 * 8 / 10  # 8 of 10 slept 50 ms
        assert s.wait_time_mean.ToMilliseconds() <= s.wait_time_p99.ToMilliseconds()
        assert got.health == qpb.QUEUE_HEALTH_DEGRADED
        assert [(i.reason, i.severity) for i in got.issues] == [("HIGH_FAILURE_RATE", qpb.QUEUE_HEALTH_DEGRADED)]
        assert "20%" in got.issues[0].message
        worst = (await queues.GetQueue(qpb.GetQueueRequest(queue=bad))).queue
        assert worst.health == qpb.QUEUE_HEALTH_UNHEALTHY and worst.stats.success_rate == 0
        assert [i.reason for i in worst.issues] == ["HIGH_FAILURE_RATE"]
        # ListQueues says the same (without the timing samples, which are GetQueue's).
        listed = {x.name: x for x in (await queues.ListQueues(qpb.ListQueuesRequest(page_size=1000))).queues}
        assert listed[q].health == got.health and list(listed[q].issues) == list(got.issues)
        assert listed[q].stats.success_rate == pytest.approx(0.8) and listed[q].stats.completed_total == 8
        assert listed[q].stats.completed_last_hour == 8 and listed[bad].health == qpb.QUEUE_HEALTH_UNHEALTHY

    target = ["--target", stack.grpc_target]
    shown = run_cli("queue", q, *target)
    assert shown.returncode == 0, shown.stderr
    assert "health           DEGRADED" in shown.stdout and "HIGH_FAILURE_RATE" in shown.stdout
    assert "success rate     80.0%" in shown.stdout
    assert "since start      completed 8, failed 2, cancelled 1" in shown.stdout
    table = run_cli("queues", *target)
    row = next(line for line in table.stdout.splitlines() if line.startswith(bad + " "))
    assert "UNHEALTHY" in row and "HIGH_FAILURE_RATE" in row and "0.0%" in row


async def test_a_paused_queue_is_degraded_and_says_so(stack: Stack) -> None:
    q = unique_queue("paused")
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        await queues.PauseQueue(qpb.PauseQueueRequest(queue=q))
        job = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
        got = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue
        assert got.health == qpb.QUEUE_HEALTH_DEGRADED
        assert [i.reason for i in got.issues] == ["PAUSED"] and "1 waiting" in got.issues[0].message
        assert not got.stats.HasField("success_rate")  # nothing ended yet
        resumed = (await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q))).queue
        assert resumed.paused is False
        await wait_state(jobs, job.id, {job_pb2.JOB_STATE_COMPLETED})
        after = (await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue
        assert after.health == qpb.QUEUE_HEALTH_HEALTHY and not after.issues


async def test_a_kind_no_live_executor_serves_is_unhealthy_and_stalls(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(CONVEYOR_QUEUE_HEALTH_STALL_SECONDS="1")
    s.start_gateway()
    s.start_executor(CONVEYOR_EXECUTOR_KINDS="noop")
    counting = s.start_executor(CONVEYOR_EXECUTOR_KINDS="wordcount")
    counting.stop()  # wordcount stays published (known), with no live executor serving it
    q = unique_queue("orphan")
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        done = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
        await wait_state(jobs, done.id, {job_pb2.JOB_STATE_COMPLETED})
        await jobs.SubmitJob(submit_request({"queue": q, "kind": {"name": "wordcount", "input": {"texts": ["a b"]}}}))
        latest: list[queue_service_pb2.Queue] = []

        async def issues() -> set[str]:
            latest[:] = [(await queues.GetQueue(qpb.GetQueueRequest(queue=q))).queue]
            return {i.reason for i in latest[0].issues}

        for _ in range(200):  # the executor's heartbeat recounts the kinds' slots within a second or two
            if {"NO_EXECUTOR", "STALLED"} <= await issues():
                break
            await asyncio.sleep(0.1)
        got = latest[0]
        assert got.health == qpb.QUEUE_HEALTH_UNHEALTHY, got
        no_executor = next(i for i in got.issues if i.reason == "NO_EXECUTOR")
        assert "'wordcount'" in no_executor.message and no_executor.severity == qpb.QUEUE_HEALTH_UNHEALTHY
        assert any(i.reason == "STALLED" for i in got.issues)
    table = run_cli("queues", "--target", s.grpc_target)
    row = next(line for line in table.stdout.splitlines() if line.startswith(q + " "))
    assert "UNHEALTHY" in row and "NO_EXECUTOR" in row
