"""Browser jobs through the whole system: submitted to a real gateway, run by a real
executor process on real Chromium, watched over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import grpc

from clients.demo import example_job
from conveyor.processes import descendants
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue, wait_state, watch_all
from tests.support.processes import Stack, wait_for

pb = job_service_pb2


def design_example(pages_url: str, queue: str) -> dict[str, Any]:
    """DESIGN.md's example request, as grpcurl would send it, aimed at a test page."""
    return {**example_job(f"{pages_url}/form.html"), "queue": queue}


async def test_design_example_job_completes_watched_from_start_to_end(
    jobs: JobServiceStub, stack: Stack, pages_url: str
) -> None:
    sub = await jobs.SubmitJob(submit_request(design_example(pages_url, unique_queue())))
    msgs = await watch_all(jobs, sub.id, after_sequence=0, timeout=60)
    events = [m.event for m in msgs if m.WhichOneof("kind") == "event"]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state == job_pb2.JOB_STATE_COMPLETED
    progress = [e for e in events if e.type == job_pb2.JOB_EVENT_TYPE_PROGRESS]
    # Progress per step, with the step's index; it only goes up.
    assert {e.step_index for e in progress} >= set(range(6))
    assert [e.progress for e in progress] == sorted(e.progress for e in progress)

    job = (await jobs.GetJob(pb.GetJobRequest(id=sub.id))).job
    assert job.state == job_pb2.JOB_STATE_COMPLETED
    assert job.result.values["greeting"].string_value == "Hello Ada"
    steps = job.result.steps
    assert [s.action for s in steps] == ["navigate", "fill", "click", "expect", "extract", "screenshot"]
    assert all(s.status == job_pb2.STEP_STATUS_OK for s in steps)
    assert steps[2].matched_selector == "#submit"  # the fallback
    (artifact,) = job.result.artifacts
    assert artifact.content_type == "image/png" and artifact.size_bytes > 0

    chunks = [c async for c in jobs.GetArtifact(pb.GetArtifactRequest(job_id=sub.id, name=artifact.name))]
    data = b"".join(c.data for c in chunks)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) == artifact.size_bytes == chunks[0].size_bytes

    # The executor's log lines for the job carry its id, queue and attempt.
    assert stack.executors
    lines = [json.loads(line) for line in stack.executors[0].log().splitlines() if sub.id in line]
    done = [ln for ln in lines if ln.get("event") == "job completed"]
    assert done and done[0]["queue"] == job.queue and done[0]["attempt"] == 1


async def test_a_failing_step_fails_the_job_naming_the_step(jobs: JobServiceStub, pages_url: str) -> None:
    sub = await jobs.SubmitJob(submit_request({
        "queue": unique_queue(), "maxAttempts": 1,
        "browser": {"steps": [
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {"name": "greet", "timeout": "1s", "click": {"target": {"selector": "#nope"}}},
        ]},
    }))
    job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_FAILED}, timeout=30)
    assert "greet" in job.error.message and "#nope" in job.error.message
    assert "click" in job.error.message


async def test_cancel_of_a_running_browser_job_stops_it_within_two_seconds(
    jobs: JobServiceStub, pages_url: str
) -> None:
    sub = await jobs.SubmitJob(submit_request({
        "queue": unique_queue(),
        "browser": {"steps": [
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {"name": "long wait", "wait": {"duration": "30s"}},
        ]},
    }))
    await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_ACTIVE}, timeout=30)
    # Wait until the job is inside its long step.
    async for msg in jobs.WatchJob(pb.WatchJobRequest(id=sub.id, after_sequence=0)):
        if msg.WhichOneof("kind") == "event" and msg.event.step_name == "long wait":
            break
    loop = asyncio.get_running_loop()
    started = loop.time()
    job = (await jobs.CancelJob(pb.CancelJobRequest(id=sub.id))).job
    assert job.state == job_pb2.JOB_STATE_CANCELLED
    assert loop.time() - started < 2.0


async def test_a_killed_browser_fails_the_attempt_and_the_retry_completes(
    make_stack: Callable[..., Stack], pages_url: str
) -> None:
    s = make_stack()
    s.start_gateway()
    executor = s.start_executor()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        sub = await jobs.SubmitJob(submit_request({
            "maxAttempts": 3,
            "browser": {"steps": [
                {"navigate": {"url": f"{pages_url}/form.html"}},
                {"name": "hold", "wait": {"duration": "4s"}},
                {"extract": {"target": {"selector": "h1, #name"}, "key": "x", "attribute": "id"}},
            ]},
        }))
        async for msg in jobs.WatchJob(pb.WatchJobRequest(id=sub.id, after_sequence=0)):
            if msg.WhichOneof("kind") == "event" and msg.event.step_name == "hold":
                break
        # Kill the job's Chromium (the browser's main process, found among the
        # executor's descendants by pid) while it runs.
        browser = wait_for_browser_pid(executor.pid)
        os.kill(browser, signal.SIGKILL)
        job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED}, timeout=60)
        assert job.attempt == 2
        history = await watch_all(jobs, sub.id, after_sequence=0, timeout=10)
        retried = [m.event for m in history
                   if m.WhichOneof("kind") == "event" and m.event.state == job_pb2.JOB_STATE_DELAYED]
        assert retried and retried[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]


def wait_for_browser_pid(executor_pid: int) -> int:
    """The pid of the Chromium main process among the executor's descendants."""
    found: list[int] = []

    def browser_up() -> bool:
        for pid in descendants(executor_pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"chromium") and not any(a.startswith(b"--type=") for a in argv):
                found.append(pid)
                return True
        return False

    wait_for(browser_up, 30, "a chromium main process under the executor")
    return found[0]
