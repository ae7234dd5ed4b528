"""Executor slots: the host-derived defaults, and a one-machine stack (as `conveyor
up` builds it) whose executor has the slots its queue concurrency asks for."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import grpc
import pytest

from clients.cli.stack import LocalStack, embedded_executor_slots
from conveyor.settings import Settings, default_browser_slots, default_executor_slots
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.grpc_helpers import submit_request
from tests.support.processes import free_port

pb = job_service_pb2


@pytest.mark.parametrize(
    ("cores", "memory_mib", "processes", "expected"),
    [
        (2, 23_000, 1, 1),    # this machine: a second browser job at once bought nothing
        (1, 23_000, 1, 1),    # never 0
        (8, 32_000, 1, 4),    # one per 2 cores
        (8, 32_000, 2, 2),    # shared among the executor's worker processes
        (16, 2_000, 1, 3),    # memory-bound: (2000/2 - 500) // 150
        (16, 600, 1, 1),      # little memory: still one
        (4, None, 1, 2),      # no /proc/meminfo: by cores only
    ],
)
def test_default_browser_slots_follow_cores_and_memory(
    cores: int, memory_mib: int | None, processes: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if memory_mib is None:
        monkeypatch.setattr("conveyor.settings.available_memory_mib", lambda: None)
    assert default_browser_slots(cores, memory_mib, processes) == expected


def test_default_executor_slots_leave_room_for_light_jobs() -> None:
    assert default_executor_slots(cores=2, browser_slots=1) == 4
    assert default_executor_slots(cores=8, browser_slots=4) == 16
    assert default_executor_slots(cores=1, browser_slots=9) == 9  # never fewer than browser slots


def test_settings_use_the_host_defaults_and_the_explicit_override(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONVEYOR_EXECUTOR_SLOTS", "CONVEYOR_BROWSER_SLOTS", "CONVEYOR_EXECUTOR_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.browser_slots == default_browser_slots()
    assert settings.executor_slots == default_executor_slots()
    monkeypatch.setenv("CONVEYOR_EXECUTOR_SLOTS", "3")
    monkeypatch.setenv("CONVEYOR_BROWSER_SLOTS", "2")
    assert (Settings().executor_slots, Settings().browser_slots) == (3, 2)


def test_embedded_executor_gets_the_queue_concurrency_it_needs() -> None:
    host = default_executor_slots()
    assert embedded_executor_slots({"QUEUE_CONCURRENCY": str(host + 1)}) == host + 1
    assert embedded_executor_slots({"CONVEYOR_QUEUE_CONCURRENCY": "1"}) == host
    assert embedded_executor_slots({}) == max(host, 16)  # the default queue concurrency
    # Shared among executors and their processes, rounded up.
    assert embedded_executor_slots({"QUEUE_CONCURRENCY": "100"}, executors=3) == max(host, 34)
    assert embedded_executor_slots({"QUEUE_CONCURRENCY": "100", "CONVEYOR_EXECUTOR_PROCESSES": "2"}, 2) == max(host, 25)
    # An explicit setting is the user's.
    assert embedded_executor_slots({"QUEUE_CONCURRENCY": "50", "CONVEYOR_EXECUTOR_SLOTS": "2"}) is None


async def test_a_one_machine_stack_runs_as_many_jobs_as_queue_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QUEUE_CONCURRENCY above the host's default slots (5 on a 2-core machine): that
    many noop jobs are ACTIVE at once, and one more waits."""
    for name in ("CONVEYOR_EXECUTOR_SLOTS", "CONVEYOR_QUEUE_CONCURRENCY", "QUEUE_CONCURRENCY",
                 "CONVEYOR_REDIS_URL", "CONVEYOR_EXECUTOR_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    concurrency = default_executor_slots() + 1
    out = io.StringIO()
    stack = LocalStack(
        data_dir=tmp_path / "data",
        grpc_addr=f"127.0.0.1:{free_port()}",
        env={"QUEUE_CONCURRENCY": str(concurrency), "CONVEYOR_LOG_FORMAT": "json"},
        log_dir=tmp_path / "logs",
        out=out,
    )
    await stack.start(ready_timeout=60)
    try:
        # The one-machine stack runs with auth on, with the admin key it made.
        assert stack.api_key
        key = (("authorization", f"Bearer {stack.api_key}"),)
        async with grpc.aio.insecure_channel(stack.target) as ch:
            jobs = JobServiceStub(ch)
            ids = [
                (await jobs.SubmitJob(submit_request({"queue": "seeds", "noop": {"sleep": "60s"}}), metadata=key)).id
                for _ in range(concurrency + 1)
            ]

            async def states() -> list[job_pb2.JobState.ValueType]:
                return [(await jobs.GetJob(pb.GetJobRequest(id=i), metadata=key)).job.state for i in ids]

            async def until_all_admitted() -> list[job_pb2.JobState.ValueType]:
                while True:
                    now = await states()
                    if now.count(job_pb2.JOB_STATE_ACTIVE) >= concurrency:
                        return now
                    await asyncio.sleep(0.1)  # polling the gateway, bounded by the timeout

            try:
                async with asyncio.timeout(45):
                    now = await until_all_admitted()
            except TimeoutError:
                now = await states()
                raise AssertionError(
                    f"{now.count(job_pb2.JOB_STATE_ACTIVE)} of {concurrency} ACTIVE: "
                    f"{[job_pb2.JobState.Name(s) for s in now]}\n{out.getvalue()}"
                ) from None
            assert now.count(job_pb2.JOB_STATE_ACTIVE) == concurrency
            assert now.count(job_pb2.JOB_STATE_WAITING) == 1  # the queue's limit holds
            for job_id in ids:
                await jobs.CancelJob(pb.CancelJobRequest(id=job_id), metadata=key)
    finally:
        await stack.stop(grace=15, quiet=True)
    assert f"executor slots: {concurrency} per worker process" in out.getvalue()
