"""API keys, roles and tenants with real processes: a gateway with auth on, keys made
over KeyService by the bootstrap admin key, and every RPC called with no key, a bad
key, a revoked key and each role, against its own tenant's things and another's.
Nothing another tenant owns is readable, watchable or changeable (NOT_FOUND, never
PERMISSION_DENIED), lesser roles are refused admin RPCs; the leaks are counted."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, duration_pb2
from google.rpc import error_details_pb2

from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2, queue_service_pb2, schedule_service_pb2
from conveyor.v1 import session_service_pb2 as sespb
from conveyor.v1 import suite_service_pb2 as supb
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from conveyor.v1.session_service_pb2_grpc import SessionServiceStub
from conveyor.v1.suite_service_pb2_grpc import SuiteServiceStub
from gateway.auth import METHOD_ROLES
from gateway.server import SERVICE_NAMES
from tests.support.grpc_helpers import error_info, submit_request, unique_queue
from tests.support.processes import Stack, free_port, running_stack, spawn, stack_env
from tests.test_cli import run_cli

pb, qpb, spb, kpb = job_service_pb2, queue_service_pb2, schedule_service_pb2, key_service_pb2
ADMIN_SECRET = "cvk_admin_test-bootstrap-secret"
ROLES = {"viewer": kpb.ROLE_VIEWER, "submitter": kpb.ROLE_SUBMITTER, "operator": kpb.ROLE_OPERATOR}
RANK = {"viewer": 1, "submitter": 2, "operator": 3, "admin": 4}


def auth(secret: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),) if secret else ()


@dataclass
class World:
    stack: Stack
    secrets: dict[str, str | None]  # principal -> secret
    revoked_id: str
    own_job: str  # acme's
    other_job: str  # globex's
    queue: str  # both tenants have jobs in it


@pytest.fixture(scope="module")
def secured(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("auth"), CONVEYOR_AUTH="on",
                       CONVEYOR_ADMIN_KEY=ADMIN_SECRET) as stack:
        yield stack


@pytest.fixture(scope="module")
async def world(secured: Stack) -> AsyncIterator[World]:
    async with grpc.aio.insecure_channel(secured.grpc_target) as channel:
        keys, jobs = KeyServiceStub(channel), JobServiceStub(channel)
        admin = auth(ADMIN_SECRET)
        secrets: dict[str, str | None] = {"none": None, "bad": "cvk_nope_not-a-key", "admin": ADMIN_SECRET}
        for name, role in ROLES.items():
            made = await keys.CreateKey(kpb.CreateKeyRequest(tenant="acme", role=role, name=name), metadata=admin)
            secrets[name] = made.secret
        globex = await keys.CreateKey(kpb.CreateKeyRequest(tenant="globex", role=kpb.ROLE_SUBMITTER, name="g"),
                                      metadata=admin)
        doomed = await keys.CreateKey(kpb.CreateKeyRequest(tenant="acme", role=kpb.ROLE_ADMIN, name="old"),
                                      metadata=admin)
        await keys.RevokeKey(kpb.RevokeKeyRequest(id=doomed.key.id), metadata=admin)
        secrets["revoked"] = doomed.secret
        q = unique_queue("auth")
        own = await jobs.SubmitJob(submit_request({"queue": q, "delay": "600s", "noop": {}}),
                                   metadata=auth(secrets["submitter"]))
        other = await jobs.SubmitJob(submit_request({"queue": q, "delay": "600s", "noop": {}}),
                                     metadata=auth(globex.secret))
        yield World(secured, secrets, doomed.key.id, own.id, other.id, q)


def calls(w: World) -> dict[str, Any]:
    """Per RPC: (request, stub method name on the right stub); requests aim at the
    other tenant's things wherever there is a thing to aim at."""
    other, q = w.other_job, w.queue
    noop = submit_request({"queue": unique_queue("auth"), "delay": "600s", "noop": {}})
    return {
        "JobService/SubmitJob": noop,
        "JobService/SubmitJobs": pb.SubmitJobsRequest(requests=[noop]),
        "JobService/GetJob": pb.GetJobRequest(id=other),
        "JobService/ListJobs": pb.ListJobsRequest(queue=q),
        "JobService/WatchJob": pb.WatchJobRequest(id=other),
        "JobService/WaitJob": pb.WaitJobRequest(id=other, timeout=duration_pb2.Duration(seconds=0)),
        "JobService/CancelJob": pb.CancelJobRequest(id=other),
        "JobService/RetryJob": pb.RetryJobRequest(id=other),
        "JobService/GetArtifact": pb.GetArtifactRequest(job_id=other, name="x.png"),
        "QueueService/ListQueues": qpb.ListQueuesRequest(),
        "QueueService/GetQueue": qpb.GetQueueRequest(queue=q),
        "QueueService/UpdateQueue": qpb.UpdateQueueRequest(queue=unique_queue("auth"), concurrency=3),
        "QueueService/PauseQueue": qpb.PauseQueueRequest(queue=unique_queue("auth")),
        "QueueService/ResumeQueue": qpb.ResumeQueueRequest(queue=unique_queue("auth")),
        "QueueService/CleanQueue": qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED),
        "QueueService/RetryFailedJobs": qpb.RetryFailedJobsRequest(queue=q),
        "QueueService/WatchQueue": qpb.WatchQueueRequest(queue=q, after_sequence=0),
        "QueueService/ListWorkers": qpb.ListWorkersRequest(),
        "ScheduleService/CreateSchedule": spb.CreateScheduleRequest(cron="0 0 1 1 *", template=noop),
        "ScheduleService/ListSchedules": spb.ListSchedulesRequest(),
        "ScheduleService/GetSchedule": spb.GetScheduleRequest(id="0123456789abcdef"),
        "ScheduleService/DeleteSchedule": spb.DeleteScheduleRequest(id="0123456789abcdef"),
        "ScheduleService/PauseSchedule": spb.PauseScheduleRequest(id="0123456789abcdef"),
        "ScheduleService/ResumeSchedule": spb.ResumeScheduleRequest(id="0123456789abcdef"),
        "KeyService/CreateKey": kpb.CreateKeyRequest(tenant="acme", role=kpb.ROLE_VIEWER, name="x"),
        "KeyService/ListKeys": kpb.ListKeysRequest(),
        "KeyService/RevokeKey": kpb.RevokeKeyRequest(id=w.revoked_id),
        "KeyService/WhoAmI": kpb.WhoAmIRequest(),
        "SessionService/ListSessions": sespb.ListSessionsRequest(),
        "SessionService/DeleteSession": sespb.DeleteSessionRequest(name="nobodys"),
        "SuiteService/SubmitSuite": supb.SubmitSuiteRequest(tests=[supb.SuiteTest(name="t", job=noop)]),
        "SuiteService/GetSuite": supb.GetSuiteRequest(id="0123456789abcdef"),
        "SuiteService/WatchSuite": supb.WatchSuiteRequest(id="0123456789abcdef"),
        "SuiteService/GetSuiteReport": supb.GetSuiteReportRequest(id="0123456789abcdef"),
    }


#: What a caller of the acme tenant may not see at all: the other tenant's job (NOT_FOUND).
AIMED_AT_OTHER = {"JobService/GetJob", "JobService/WatchJob", "JobService/WaitJob", "JobService/CancelJob",
                  "JobService/RetryJob", "JobService/GetArtifact"}
#: Missing for every caller (the schedule id names nothing; the artifact does not exist).
MISSING_FOR_ALL = {"ScheduleService/GetSchedule", "ScheduleService/DeleteSchedule",
                   "ScheduleService/PauseSchedule", "ScheduleService/ResumeSchedule", "JobService/GetArtifact",
                   "SessionService/DeleteSession", "SuiteService/GetSuite", "SuiteService/WatchSuite",
                   "SuiteService/GetSuiteReport"}


async def call(channel: grpc.aio.Channel, method: str, request: Any, secret: str | None) -> tuple[grpc.StatusCode,
                                                                                                   list[Any]]:
    service, name = method.split("/")
    stub_class = {"JobService": JobServiceStub, "QueueService": QueueServiceStub,
                  "ScheduleService": ScheduleServiceStub, "KeyService": KeyServiceStub,
                  "SessionService": SessionServiceStub, "SuiteService": SuiteServiceStub}[service]
    rpc = getattr(stub_class(channel), name)
    try:
        result = rpc(request, metadata=auth(secret), timeout=3)
        if hasattr(result, "__aiter__"):
            got: list[Any] = []

            async def read() -> None:
                async for message in result:
                    got.append(message)

            try:
                await asyncio.wait_for(read(), 1.5)
            except TimeoutError:
                result.cancel()
            return grpc.StatusCode.OK, got
        return grpc.StatusCode.OK, [await result]
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.CANCELLED:
            return grpc.StatusCode.OK, []
        return err.code(), []


def expected(method: str, principal: str) -> set[grpc.StatusCode]:
    if principal in ("none", "bad", "revoked"):
        return {grpc.StatusCode.UNAUTHENTICATED}
    needed = METHOD_ROLES[f"/conveyor.v1.{method}"]
    if RANK[principal] < needed:
        return {grpc.StatusCode.PERMISSION_DENIED}
    if method in MISSING_FOR_ALL or (method in AIMED_AT_OTHER and principal != "admin"):
        return {grpc.StatusCode.NOT_FOUND}
    if method == "JobService/RetryJob":  # the admin sees it: a delayed job cannot be retried
        return {grpc.StatusCode.FAILED_PRECONDITION}
    return {grpc.StatusCode.OK}


async def test_every_rpc_by_every_caller(world: World) -> None:
    methods = calls(world)
    # Every RPC of every Conveyor service is in the matrix (a new RPC must be added).
    declared = {f"/conveyor.v1.{m}" for m in methods}
    served = {f"/{name}/{m.name}" for name in SERVICE_NAMES
              for m in descriptor_pool.Default().FindServiceByName(name).methods}
    assert declared == set(METHOD_ROLES) == served, (set(METHOD_ROLES) ^ declared, served ^ declared)
    wrong, leaks = [], []
    async with grpc.aio.insecure_channel(world.stack.grpc_target) as channel:
        for principal, secret in world.secrets.items():
            for method, request in methods.items():
                if method in ("JobService/CancelJob", "KeyService/RevokeKey") and principal == "admin":
                    continue  # acts for real: checked on their own below
                code, messages = await call(channel, method, request, secret)
                if code not in expected(method, principal):
                    wrong.append((principal, method, code.name, sorted(c.name for c in expected(method, principal))))
                if principal != "admin" and code == grpc.StatusCode.OK:
                    leaks += [(principal, method) for m in messages if world.other_job in str(m)]
    print(f"matrix: {len(world.secrets) * len(methods)} calls, {len(wrong)} unexpected codes, {len(leaks)} leaks")
    assert wrong == []
    assert leaks == []


async def test_a_tenant_lists_and_watches_only_its_own_jobs(world: World) -> None:
    async with grpc.aio.insecure_channel(world.stack.grpc_target) as channel:
        jobs, queues = JobServiceStub(channel), QueueServiceStub(channel)
        viewer = auth(world.secrets["viewer"])
        listed = await jobs.ListJobs(pb.ListJobsRequest(queue=world.queue), metadata=viewer)
        assert [j.id for j in listed.jobs] == [world.own_job]
        # Pages are made of the tenant's own jobs: the other tenant's newer job takes no
        # place on them (a page of one holds acme's job, and the next page is empty).
        first = await jobs.ListJobs(pb.ListJobsRequest(queue=world.queue, page_size=1), metadata=viewer)
        assert [j.id for j in first.jobs] == [world.own_job]
        rest = await jobs.ListJobs(pb.ListJobsRequest(queue=world.queue, page_size=1, page_token=first.next_page_token),
                                   metadata=viewer)
        assert list(rest.jobs) == [] and rest.next_page_token == ""
        mine = await jobs.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=viewer)
        assert mine.jobs and {j.owner for j in mine.jobs} == {"acme"}
        everything = await jobs.ListJobs(pb.ListJobsRequest(queue=world.queue), metadata=auth(ADMIN_SECRET))
        assert {j.id for j in everything.jobs} == {world.own_job, world.other_job}
        # Nor are the other tenant's jobs countable: the queue's counts are acme's own.
        counted = (await queues.GetQueue(qpb.GetQueueRequest(queue=world.queue), metadata=viewer)).queue
        whole = (await queues.GetQueue(qpb.GetQueueRequest(queue=world.queue), metadata=auth(ADMIN_SECRET))).queue
        assert (counted.counts.delayed, whole.counts.delayed) == (1, 2)
        seen: list[str] = []
        stream = queues.WatchQueue(qpb.WatchQueueRequest(queue=world.queue, after_sequence=0), metadata=viewer)

        async def read() -> None:
            async for msg in stream:
                if msg.WhichOneof("kind") == "event":
                    seen.append(msg.event.job_id)
                    return

        await asyncio.wait_for(read(), 10)
        stream.cancel()
        assert seen == [world.own_job]


async def test_a_revoked_key_and_the_cancel_of_another_tenants_job(world: World) -> None:
    async with grpc.aio.insecure_channel(world.stack.grpc_target) as channel:
        jobs, keys = JobServiceStub(channel), KeyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys.WhoAmI(kpb.WhoAmIRequest(), metadata=auth(world.secrets["revoked"]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and error_info(err.value).reason == "KEY_INVALID"
        me = await keys.WhoAmI(kpb.WhoAmIRequest(), metadata=auth(world.secrets["operator"]))
        assert (me.tenant, me.role) == ("acme", kpb.ROLE_OPERATOR)
        # The other tenant's job is untouched by every acme attempt above.
        other = (await jobs.GetJob(pb.GetJobRequest(id=world.other_job), metadata=auth(ADMIN_SECRET))).job
        assert other.state == job_pb2.JOB_STATE_DELAYED
        # A key revoked now stops working within a few seconds (each gateway trusts a key 2 s).
        fresh = await keys.CreateKey(kpb.CreateKeyRequest(tenant="acme", role=kpb.ROLE_VIEWER, name="brief"),
                                     metadata=auth(ADMIN_SECRET))
        await keys.WhoAmI(kpb.WhoAmIRequest(), metadata=auth(fresh.secret))
        await keys.RevokeKey(kpb.RevokeKeyRequest(id=fresh.key.id), metadata=auth(ADMIN_SECRET))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            try:
                await keys.WhoAmI(kpb.WhoAmIRequest(), metadata=auth(fresh.secret))
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert loop.time() < deadline, "a revoked key kept working"
            await asyncio.sleep(0.1)
        listed = await keys.ListKeys(kpb.ListKeysRequest(tenant="acme"), metadata=auth(ADMIN_SECRET))
        assert {k.name for k in listed.keys} >= {"viewer", "submitter", "operator", "old", "brief"}
        assert all(k.revoke_time.seconds > 0 for k in listed.keys if k.name in ("old", "brief"))
        assert all(k.revoke_time.seconds == 0 for k in listed.keys if k.name in ROLES)


def test_keys_through_the_cli(world: World, tmp_path: Path) -> None:
    """`conveyor keys create|list|revoke` and `whoami`, as an admin would use them."""
    target = ["--target", world.stack.grpc_target]
    admin = ["--api-key", ADMIN_SECRET]
    made = run_cli("keys", "create", "--tenant", "initech", "--role", "submitter", "--name", "ci", "-q",
                   *target, *admin)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("cvk_")
    me = run_cli("whoami", *target, "--api-key", secret)
    assert me.returncode == 0 and me.stdout.startswith("tenant initech, role submitter, key "), me.stdout + me.stderr
    listed = run_cli("keys", "list", "--tenant", "initech", *target, *admin)
    assert listed.returncode == 0 and "initech" in listed.stdout and "active" in listed.stdout, listed.stdout
    key_id = me.stdout.strip().rsplit(" ", 1)[-1]
    # A submitter may not manage keys: PERMISSION_DENIED, said on stderr.
    denied = run_cli("keys", "list", *target, "--api-key", secret)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr, denied.stderr
    revoked = run_cli("keys", "revoke", key_id, *target, *admin)
    assert revoked.returncode == 0 and f"key {key_id} (initech, submitter) revoked" in revoked.stdout
    unauthenticated = run_cli("whoami", *target)  # no key at all (and no local admin key for this stack)
    assert unauthenticated.returncode == 1 and "UNAUTHENTICATED" in unauthenticated.stderr


def test_a_gateway_beyond_loopback_without_auth_refuses_to_start(redis_url: str, tmp_path: Path) -> None:
    env = stack_env(redis_url, tmp_path, CONVEYOR_AUTH="off", CONVEYOR_GRPC_ADDR=f"0.0.0.0:{free_port()}")
    gateway = spawn("gateway", [sys.executable, "-m", "gateway.main"], env, tmp_path / "logs")
    try:
        assert gateway.proc.wait(30) != 0
        assert "refusing to serve" in gateway.log() and "CONVEYOR_INSECURE" in gateway.log()
    finally:
        gateway.kill()


async def test_cancel_and_retry_record_the_key_that_asked(world: World) -> None:
    async with grpc.aio.insecure_channel(world.stack.grpc_target) as channel:
        jobs, keys = JobServiceStub(channel), KeyServiceStub(channel)
        submitter = auth(world.secrets["submitter"])
        key_id = (await keys.WhoAmI(kpb.WhoAmIRequest(), metadata=submitter)).key_id
        q = unique_queue("who")
        # A delayed job (cancelled by the gateway) and a running one (by its executor).
        for body, running in (({"queue": q, "delay": "600s", "noop": {}}, False),
                              ({"queue": q, "noop": {"sleep": "5s"}}, True)):
            sub = await jobs.SubmitJob(submit_request(body), metadata=submitter)
            if running:
                await wait_state_with(jobs, sub.id, job_pb2.JOB_STATE_ACTIVE, submitter)
            done = (await jobs.CancelJob(pb.CancelJobRequest(id=sub.id), metadata=submitter)).job
            assert done.state == job_pb2.JOB_STATE_CANCELLED
            info = error_details(done.error)
            assert info.reason == "CANCELLED_BY_CLIENT" and info.metadata["key_id"] == key_id, body
            retried = (await jobs.RetryJob(pb.RetryJobRequest(id=sub.id), metadata=submitter)).job
            # The retry's event is the job's newest (a watch from before it shows it first).
            stream = jobs.WatchJob(pb.WatchJobRequest(id=sub.id, after_sequence=retried.last_sequence - 1),
                                   metadata=submitter)
            said = await asyncio.wait_for(first_event_message(stream), 10)
            stream.cancel()
            assert said == f"retry requested by key {key_id}"


async def first_event_message(stream: Any) -> str:
    async for msg in stream:
        if msg.WhichOneof("kind") == "event":
            return str(msg.event.message)
    raise AssertionError("the stream ended without an event")


def error_details(status: Any) -> Any:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


async def wait_state_with(jobs: JobServiceStub, job_id: str, state: int, metadata: Any) -> None:
    async def follow() -> None:
        async for msg in jobs.WatchJob(pb.WatchJobRequest(id=job_id, after_sequence=0), metadata=metadata):
            if msg.WhichOneof("kind") == "event" and msg.event.state == state:
                return

    await asyncio.wait_for(follow(), 20)
