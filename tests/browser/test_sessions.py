"""Sessions through the whole system, with auth on: a job logs in on a local page and
saves its storage state as a session of its tenant; a later job starts logged in;
another tenant's job cannot use it (SESSION_NOT_FOUND, not retried) nor see or
delete it; sessions expire and are deleted with a call; roles are enforced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2, session_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from conveyor.v1.session_service_pb2_grpc import SessionServiceStub
from tests.support.grpc_helpers import error_info, submit_request, unique_queue
from tests.support.processes import Stack, running_stack

pb, kpb, spb = job_service_pb2, key_service_pb2, session_service_pb2
ADMIN = "cvk_admin_session-test-secret"


def auth(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


@dataclass
class Tenants:
    stack: Stack
    acme: str  # submitter
    acme_viewer: str
    globex: str  # submitter


@pytest.fixture(scope="module")
def secured(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("sessions"), CONVEYOR_AUTH="on",
                       CONVEYOR_ADMIN_KEY=ADMIN) as stack:
        yield stack


@pytest.fixture(scope="module")
async def tenants(secured: Stack) -> AsyncIterator[Tenants]:
    async with grpc.aio.insecure_channel(secured.grpc_target) as ch:
        keys = KeyServiceStub(ch)

        async def key(tenant: str, role: int) -> str:
            made = await keys.CreateKey(kpb.CreateKeyRequest(tenant=tenant, role=role, name=tenant),  # type: ignore[arg-type]
                                        metadata=auth(ADMIN))
            return str(made.secret)

        yield Tenants(secured, await key("acme", kpb.ROLE_SUBMITTER), await key("acme", kpb.ROLE_VIEWER),
                      await key("globex", kpb.ROLE_SUBMITTER))


@pytest.fixture
async def channel(tenants: Tenants) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as ch:
        yield ch


async def run_job(channel: grpc.aio.Channel, secret: str, body: dict[str, Any]) -> job_pb2.Job:
    jobs = JobServiceStub(channel)
    sub = await jobs.SubmitJob(submit_request({"queue": unique_queue("sess"), **body}), metadata=auth(secret))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waited = await jobs.WaitJob(pb.WaitJobRequest(id=sub.id, timeout=duration_pb2.Duration(seconds=30)),
                                    metadata=auth(secret))
        if waited.done:
            job: job_pb2.Job = waited.job
            return job
    raise AssertionError(f"job {sub.id} did not end")


def login_job(pages_url: str, user: str, save: str, ttl: str | None = None) -> dict[str, Any]:
    session: dict[str, Any] = {"save": save}
    if ttl:
        session["ttl"] = ttl
    return {"browser": {"session": session, "steps": [
        {"navigate": {"url": f"{pages_url}/session_login.html"}},
        {"expect": {"target": {"selector": "#who"}, "textEquals": "anonymous"}},
        {"fill": {"target": {"selector": "#user"}, "text": user}},
        {"click": {"target": {"selector": "#go"}}},
        {"expect": {"target": {"selector": "#who"}, "textEquals": f"logged in as {user}"}},
    ]}}


def who_job(pages_url: str, use: str | None, expected: str) -> dict[str, Any]:
    browser: dict[str, Any] = {"steps": [
        {"navigate": {"url": f"{pages_url}/session_login.html"}},
        {"name": "who", "timeout": "2s", "expect": {"target": {"selector": "#who"}, "textEquals": expected}},
    ]}
    if use:
        browser["session"] = {"use": use}
    return {"maxAttempts": 3, "browser": browser}


def failure_reason(job: job_pb2.Job) -> str:
    from google.rpc import error_details_pb2

    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def test_a_job_saves_a_session_and_later_jobs_of_the_tenant_start_logged_in(
    tenants: Tenants, channel: grpc.aio.Channel, pages_url: str
) -> None:
    saved = await run_job(channel, tenants.acme, login_job(pages_url, "ada", "login"))
    assert saved.state == job_pb2.JOB_STATE_COMPLETED, saved.error.message
    assert saved.result.saved_session == "login"

    later = await run_job(channel, tenants.acme, who_job(pages_url, "login", "logged in as ada"))
    assert later.state == job_pb2.JOB_STATE_COMPLETED, later.error.message
    # Without the session the same page is anonymous: the session is what logged it in.
    fresh = await run_job(channel, tenants.acme, who_job(pages_url, None, "anonymous"))
    assert fresh.state == job_pb2.JOB_STATE_COMPLETED, fresh.error.message

    sessions = SessionServiceStub(channel)
    listed = (await sessions.ListSessions(spb.ListSessionsRequest(), metadata=auth(tenants.acme_viewer))).sessions
    (login,) = [s for s in listed if s.name == "login"]
    assert login.owner == "acme" and login.job_id == saved.id
    assert login.cookie_count == 1 and list(login.origins) == [pages_url]
    assert login.expire_time.ToSeconds() - login.create_time.ToSeconds() == 24 * 3600


async def test_another_tenant_cannot_use_see_or_delete_the_session(
    tenants: Tenants, channel: grpc.aio.Channel, pages_url: str
) -> None:
    saved = await run_job(channel, tenants.acme, login_job(pages_url, "bob", "acme-only"))
    assert saved.state == job_pb2.JOB_STATE_COMPLETED, saved.error.message

    stolen = await run_job(channel, tenants.globex, who_job(pages_url, "acme-only", "logged in as bob"))
    assert stolen.state == job_pb2.JOB_STATE_FAILED
    assert failure_reason(stolen) == "SESSION_NOT_FOUND" and stolen.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert stolen.attempt == 1  # not retried, though it had 3 attempts
    assert len(stolen.result.steps) == 0 and "acme-only" in stolen.error.message

    sessions = SessionServiceStub(channel)
    theirs = await sessions.ListSessions(spb.ListSessionsRequest(), metadata=auth(tenants.globex))
    assert [s.name for s in theirs.sessions] == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await sessions.DeleteSession(spb.DeleteSessionRequest(name="acme-only"), metadata=auth(tenants.globex))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # Still there for acme.
    mine = await sessions.ListSessions(spb.ListSessionsRequest(), metadata=auth(tenants.acme))
    assert "acme-only" in [s.name for s in mine.sessions]


async def test_delete_needs_a_submitter_and_a_deleted_session_is_gone(
    tenants: Tenants, channel: grpc.aio.Channel, pages_url: str
) -> None:
    saved = await run_job(channel, tenants.acme, login_job(pages_url, "cy", "doomed"))
    assert saved.state == job_pb2.JOB_STATE_COMPLETED, saved.error.message
    sessions = SessionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await sessions.DeleteSession(spb.DeleteSessionRequest(name="doomed"), metadata=auth(tenants.acme_viewer))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await sessions.DeleteSession(spb.DeleteSessionRequest(name="doomed"), metadata=auth(tenants.acme))
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await sessions.DeleteSession(spb.DeleteSessionRequest(name="doomed"), metadata=auth(tenants.acme))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(again.value).reason == "SESSION_NOT_FOUND"
    gone = await run_job(channel, tenants.acme, who_job(pages_url, "doomed", "logged in as cy"))
    assert gone.state == job_pb2.JOB_STATE_FAILED and failure_reason(gone) == "SESSION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await sessions.DeleteSession(spb.DeleteSessionRequest(name="no/slashes"), metadata=auth(tenants.acme))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_session_expires_after_its_ttl(tenants: Tenants, channel: grpc.aio.Channel, pages_url: str) -> None:
    saved = await run_job(channel, tenants.acme, login_job(pages_url, "dee", "brief", ttl="2s"))
    assert saved.state == job_pb2.JOB_STATE_COMPLETED, saved.error.message
    sessions = SessionServiceStub(channel)
    listed = (await sessions.ListSessions(spb.ListSessionsRequest(), metadata=auth(tenants.acme))).sessions
    (brief,) = [s for s in listed if s.name == "brief"]
    assert brief.expire_time.ToMilliseconds() - brief.create_time.ToMilliseconds() == 2000
    # Until just past its expiry (a known time, 2 s after it was saved); then it is gone everywhere.
    await asyncio.sleep(max(0.0, brief.expire_time.ToMilliseconds() / 1000 - time.time()) + 0.05)
    listed = (await sessions.ListSessions(spb.ListSessionsRequest(), metadata=auth(tenants.acme))).sessions
    assert "brief" not in [s.name for s in listed]
    expired = await run_job(channel, tenants.acme, who_job(pages_url, "brief", "logged in as dee"))
    assert expired.state == job_pb2.JOB_STATE_FAILED and failure_reason(expired) == "SESSION_NOT_FOUND"
    with tenants.stack.redis() as r:  # nothing of it stays in Redis
        assert not r.exists(f"{tenants.stack.prefix}:session:acme:brief")


async def test_another_tenants_suite_does_not_exist(tenants: Tenants, channel: grpc.aio.Channel) -> None:
    from conveyor.v1 import suite_service_pb2 as supb
    from conveyor.v1.suite_service_pb2_grpc import SuiteServiceStub

    suites = SuiteServiceStub(channel)
    test = supb.SuiteTest(name="t", job=pb.SubmitJobRequest(queue=unique_queue("sess"), noop=task_pb2.NoopTask()))
    submitted = await suites.SubmitSuite(supb.SubmitSuiteRequest(tests=[test]), metadata=auth(tenants.acme))
    mine = await suites.GetSuite(supb.GetSuiteRequest(id=submitted.suite_id), metadata=auth(tenants.acme_viewer))
    assert mine.suite.owner == "acme" and mine.suite.counts.total == 1
    for call in (suites.GetSuite(supb.GetSuiteRequest(id=submitted.suite_id), metadata=auth(tenants.globex)),
                 suites.GetSuiteReport(supb.GetSuiteReportRequest(id=submitted.suite_id),
                                       metadata=auth(tenants.globex))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_store_bounds_sessions_by_size_and_count(redis_url: str) -> None:
    import uuid

    from conveyor.browser_options import MAX_SESSION_BYTES, MAX_SESSIONS_PER_OWNER
    from conveyor.errors import ResourceExhausted
    from conveyor.store.job_store import connect
    from conveyor.store.session_store import SessionStore

    client = connect(redis_url)
    store = SessionStore(client, f"s{uuid.uuid4().hex[:8]}")
    state = {"cookies": [], "origins": [{"origin": "https://a.example", "localStorage": []}]}
    try:
        big = {"cookies": [],
               "origins": [{"origin": "x", "localStorage": [{"name": "k", "value": "v" * MAX_SESSION_BYTES}]}]}
        with pytest.raises(ResourceExhausted) as large:
            await store.save("acme", "big", big, ttl_ms=60_000, job_id="j")
        assert large.value.reason == "SESSION_TOO_LARGE"
        await asyncio.gather(*(store.save("acme", f"s{i}", state, ttl_ms=60_000, job_id="j")
                               for i in range(MAX_SESSIONS_PER_OWNER)))
        with pytest.raises(ResourceExhausted) as full:
            await store.save("acme", "one-more", state, ttl_ms=60_000, job_id="j")
        assert full.value.reason == "SESSION_LIMIT"
        await store.save("acme", "s7", state, ttl_ms=60_000, job_id="j2")  # replacing one is fine
        await store.save("globex", "s7", state, ttl_ms=60_000, job_id="j3")  # per tenant
        await store.delete("acme", "s0")
        await store.save("acme", "one-more", state, ttl_ms=60_000, job_id="j")
        listed = await store.list_sessions("acme")
        assert len(listed) == MAX_SESSIONS_PER_OWNER and {"one-more", "s7"} <= {s.name for s in listed}
        assert (await store.get("acme", "s7")).info.job_id == "j2"
        assert (await store.get("globex", "s7")).info.job_id == "j3"
    finally:
        await client.aclose()
