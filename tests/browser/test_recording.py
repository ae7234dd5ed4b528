"""Debugging artifacts through the whole system (gateway, executor process, real
Chromium): Playwright traces kept as Playwright Test's `trace` option says, console
messages and page errors in the result, video and HAR as artifacts."""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
from collections.abc import Iterator

import pytest

from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.browser.suite_server import flaky_server
from tests.support.grpc_helpers import submit_request, unique_queue, wait_state

pb = job_service_pb2
DONE = {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED}


@pytest.fixture(scope="module")
def flaky_url() -> Iterator[str]:
    with flaky_server() as url:
        yield url


async def artifact_bytes(jobs: JobServiceStub, job_id: str, name: str) -> bytes:
    chunks = [c async for c in jobs.GetArtifact(pb.GetArtifactRequest(job_id=job_id, name=name))]
    return b"".join(c.data for c in chunks)


def partial_result(job: job_pb2.Job) -> job_pb2.JobResult:
    """What a failed job's error carries of its result."""
    for detail in job.error.details:
        result = job_pb2.JobResult()
        if detail.Unpack(result):
            return result
    raise AssertionError("no JobResult in the failed job's error details")


def assert_trace_zip(data: bytes) -> None:
    """A Playwright trace as `playwright show-trace` loads it."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert "trace.trace" in names and "trace.network" in names, names
        events = [json.loads(line) for line in z.read("trace.trace").decode().splitlines() if line.strip()]
    assert events[0]["type"] == "context-options"
    assert any(e.get("type") == "before" for e in events)  # the recorded actions


def avi_frames(data: bytes) -> list[bytes]:
    """The frames of a Motion-JPEG AVI, read by its RIFF structure and its index."""
    assert data[:4] == b"RIFF" and data[8:12] == b"AVI " and struct.unpack("<I", data[4:8])[0] == len(data) - 8
    chunks: dict[bytes, tuple[int, int]] = {}
    pos = 12
    while pos < len(data):
        fourcc, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        key = data[pos + 8:pos + 12] if fourcc == b"LIST" else fourcc
        chunks[key] = (pos + 8, size)
        pos += 8 + size + size % 2
    assert {b"hdrl", b"movi", b"idx1"} <= set(chunks)
    hdrl_at, _ = chunks[b"hdrl"]
    assert data[hdrl_at + 4:hdrl_at + 8] == b"avih"
    total_frames = struct.unpack("<I", data[hdrl_at + 12 + 16:hdrl_at + 12 + 20])[0]
    movi_at, _ = chunks[b"movi"]
    idx_at, idx_size = chunks[b"idx1"]
    frames = []
    for i in range(idx_size // 16):
        fourcc, _, offset, size = struct.unpack("<4sIII", data[idx_at + 16 * i:idx_at + 16 * (i + 1)])
        assert fourcc == b"00dc" and data[movi_at + offset:movi_at + offset + 4] == b"00dc"
        frames.append(data[movi_at + offset + 8:movi_at + offset + 8 + size])
    assert len(frames) == total_frames
    return frames


def console_job(pages_url: str, trace: str, *, fail: bool) -> dict[str, object]:
    steps: list[dict[str, object]] = [
        {"navigate": {"url": f"{pages_url}/suite_console.html"}},
        {"expect": {"target": {"selector": "#status"}, "textEquals": "loaded 3"}},
        {"name": "boom", "click": {"target": {"selector": "#boom"}}},
        {"wait": {"duration": "0.3s"}},
    ]
    if fail:
        steps.append({"name": "wrong", "timeout": "1s",
                      "expect": {"target": {"selector": "#status"}, "textEquals": "never"}})
    return {"queue": unique_queue("rec"), "maxAttempts": 1,
            "browser": {"steps": steps, "recording": {"trace": trace}}}


async def test_retain_on_failure_keeps_the_trace_of_a_failed_job_with_its_console(
    jobs: JobServiceStub, pages_url: str
) -> None:
    sub = await jobs.SubmitJob(submit_request(console_job(pages_url, "TRACE_MODE_RETAIN_ON_FAILURE", fail=True)))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_FAILED and "wrong" in job.error.message
    partial = partial_result(job)
    assert [a.name for a in partial.artifacts] == ["trace-1.zip"]
    assert partial.artifacts[0].content_type == "application/zip"
    data = await artifact_bytes(jobs, sub.id, "trace-1.zip")
    assert len(data) == partial.artifacts[0].size_bytes
    assert_trace_zip(data)
    texts = [(m.type, m.text) for m in partial.console]
    assert ("log", "hello from the page 42") in texts and ("warning", "careful") in texts
    assert ("error", "about to throw") in texts
    assert any("kaboom in the page" in e.message for e in partial.page_errors)
    # Thrown by a timer the click of step 2 set: it is the step running when the page
    # reported it, step 2 or (once the click has returned) the wait after it.
    assert len(partial.page_errors) == 1 and partial.page_errors[0].step_index in (2, 3)


async def test_retain_on_failure_keeps_no_trace_of_a_passing_job_and_the_result_has_the_console(
    jobs: JobServiceStub, pages_url: str
) -> None:
    sub = await jobs.SubmitJob(submit_request(console_job(pages_url, "TRACE_MODE_RETAIN_ON_FAILURE", fail=False)))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
    assert [a.name for a in job.result.artifacts] == []
    hello = [m for m in job.result.console if m.text == "hello from the page 42"]
    assert hello and hello[0].location.startswith(f"{pages_url}/suite_console.html:")
    assert hello[0].step_index == 0
    assert [e.message.splitlines()[0] for e in job.result.page_errors] == ["Error: kaboom in the page"]


async def test_trace_on_keeps_it_for_a_passing_job(jobs: JobServiceStub, pages_url: str) -> None:
    sub = await jobs.SubmitJob(submit_request(console_job(pages_url, "TRACE_MODE_ON", fail=False)))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
    assert [a.name for a in job.result.artifacts] == ["trace-1.zip"]
    assert_trace_zip(await artifact_bytes(jobs, sub.id, "trace-1.zip"))


async def test_on_first_retry_records_only_the_retry(jobs: JobServiceStub, flaky_url: str) -> None:
    sub = await jobs.SubmitJob(submit_request({
        "queue": unique_queue("rec"), "maxAttempts": 2,
        "browser": {"recording": {"trace": "TRACE_MODE_ON_FIRST_RETRY"}, "steps": [
            {"navigate": {"url": f"{flaky_url}/flaky/{uuid.uuid4().hex}"}},
            {"timeout": "1s", "expect": {"target": {"selector": "#state"}, "textEquals": "ok"}},
        ]},
    }))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED and job.attempt == 2, job.error.message
    first = job_pb2.JobResult()
    assert any(d.Unpack(first) for d in job.attempts[0].error.details)
    assert [a.name for a in first.artifacts] == []  # the first attempt recorded nothing
    assert [a.name for a in job.result.artifacts] == ["trace-2.zip"]
    assert_trace_zip(await artifact_bytes(jobs, sub.id, "trace-2.zip"))


async def test_video_and_har_are_artifacts(jobs: JobServiceStub, pages_url: str) -> None:
    sub = await jobs.SubmitJob(submit_request({
        "queue": unique_queue("rec"), "maxAttempts": 1,
        "browser": {"recording": {"video": True, "har": True}, "steps": [
            {"navigate": {"url": f"{pages_url}/suite_console.html"}},
            {"expect": {"target": {"selector": "#status"}, "textEquals": "loaded 3"}},
            {"wait": {"duration": "0.5s"}},
        ]},
    }))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
    kinds = {a.name: a.content_type for a in job.result.artifacts}
    assert kinds == {"video-1.avi": "video/x-msvideo", "network-1.har": "application/json"}
    video = await artifact_bytes(jobs, sub.id, "video-1.avi")
    frames = avi_frames(video)
    assert len(frames) >= 5  # 10 a second over the job's ~0.7 s and more
    assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in frames)  # whole JPEG images
    har = json.loads(await artifact_bytes(jobs, sub.id, "network-1.har"))
    urls = [e["request"]["url"] for e in har["log"]["entries"]]
    assert f"{pages_url}/suite_console.html" in urls and f"{pages_url}/suite_data.json" in urls


async def test_bad_recording_options_are_refused_at_submit(jobs: JobServiceStub, pages_url: str) -> None:
    import grpc

    from tests.support.grpc_helpers import field_violations

    request = submit_request({"browser": {"steps": [{"navigate": {"url": f"{pages_url}/form.html"}}],
                                          "session": {"use": "bad name!", "ttl": "1s"}}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.SubmitJob(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"browser.session.use", "browser.session.ttl"}


async def test_every_browser_job_has_its_console_and_page_errors(jobs: JobServiceStub, pages_url: str) -> None:
    body = console_job(pages_url, "TRACE_MODE_UNSPECIFIED", fail=False)
    del body["browser"]["recording"]  # type: ignore[attr-defined]
    sub = await jobs.SubmitJob(submit_request(body))
    job = await wait_state(jobs, sub.id, DONE, timeout=60)
    assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
    assert [(m.type, m.text, m.step_index) for m in job.result.console] == [
        ("log", "hello from the page 42", 0), ("warning", "careful", 0), ("error", "about to throw", 2)]
    assert len(job.result.page_errors) == 1 and job.result.console_dropped == 0
    assert list(job.result.artifacts) == []
