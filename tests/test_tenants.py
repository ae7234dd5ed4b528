"""Tenants sharing one gateway, seen from outside over gRPC with real processes: fair
share of a queue (a tenant's new job goes in near the head, not behind another's
backlog), the per-tenant running limit, ListJobs by label within a tenant, and each
tenant's own view and administration of a shared queue."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import field_violations, submit_request, unique_queue
from tests.support.processes import Stack, running_stack

pb, qpb, kpb = job_service_pb2, queue_service_pb2, key_service_pb2
ADMIN = "cvk_admin_tenants-test-secret"
MAX_RUNNING = 2
Metadata = tuple[tuple[str, str], ...]


def bearer(secret: str) -> Metadata:
    return (("authorization", f"Bearer {secret}"),)


@dataclass
class Tenants:
    stack: Stack
    admin: Metadata
    keys: dict[str, Metadata]  # "<tenant>-<role>" -> metadata


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("tenants"), CONVEYOR_AUTH="on", CONVEYOR_ADMIN_KEY=ADMIN,
                       CONVEYOR_EXECUTOR_SLOTS="6", CONVEYOR_EXECUTOR_KINDS="noop",
                       CONVEYOR_TENANT_MAX_RUNNING_JOBS=str(MAX_RUNNING)) as stack:
        yield stack


@pytest.fixture(scope="module")
async def tenants(shared: Stack) -> AsyncIterator[Tenants]:
    async with grpc.aio.insecure_channel(shared.grpc_target) as channel:
        keys = KeyServiceStub(channel)
        made: dict[str, Metadata] = {}
        for tenant in ("acme", "globex"):
            for role, value in (("viewer", kpb.ROLE_VIEWER), ("submitter", kpb.ROLE_SUBMITTER),
                                ("operator", kpb.ROLE_OPERATOR)):
                key = await keys.CreateKey(kpb.CreateKeyRequest(tenant=tenant, role=value, name=role),
                                           metadata=bearer(ADMIN))
                made[f"{tenant}-{role}"] = bearer(key.secret)
        yield Tenants(shared, bearer(ADMIN), made)


def noop(queue: str, **body: object) -> pb.SubmitJobRequest:
    return submit_request({"queue": queue, "noop": {}, **body})


async def test_a_tenants_new_job_is_not_behind_another_tenants_backlog(tenants: Tenants) -> None:
    q = unique_queue("fair")
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as channel:
        jobs, queues = JobServiceStub(channel), QueueServiceStub(channel)
        await queues.PauseQueue(qpb.PauseQueueRequest(queue=q), metadata=tenants.admin)  # nothing runs: places hold
        backlog = [noop(q)] * 400
        await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=backlog), metadata=tenants.keys["acme-submitter"])
        mine = await jobs.SubmitJob(noop(q), metadata=tenants.keys["globex-submitter"])
        assert mine.position <= 2, f"globex's job is at place {mine.position}, behind acme's 400"
        got = (await jobs.GetJob(pb.GetJobRequest(id=mine.id), metadata=tenants.keys["globex-viewer"])).job
        assert got.position == mine.position
        # Turns alternate: globex's next jobs go one per acme job, not after all of acme's.
        more = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[noop(q)] * 3),
                                     metadata=tenants.keys["globex-submitter"])
        places = [r.position for r in more.results]
        assert places[0] <= 4 and all(1 <= b - a <= 3 for a, b in itertools.pairwise(places)), places


async def test_a_tenant_runs_at_most_its_limit_and_others_go_meanwhile(tenants: Tenants) -> None:
    q = unique_queue("limit")
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as channel:
        jobs = JobServiceStub(channel)
        acme, globex = tenants.keys["acme-submitter"], tenants.keys["globex-submitter"]
        many = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[noop(q, noop={"sleep": "0.6s"})] * 5),
                                     metadata=acme)
        other = await jobs.SubmitJob(noop(q, noop={"sleep": "0.1s"}), metadata=globex)
        ended = []
        for sub in [*many.results, other]:
            meta = globex if sub.id == other.id else acme
            waited = await jobs.WaitJob(pb.WaitJobRequest(id=sub.id, timeout=duration_pb2.Duration(seconds=60)),
                                        metadata=meta)
            assert waited.job.state == job_pb2.JOB_STATE_COMPLETED
            ended.append(waited.job)
        acme_runs = sorted((j.start_time.ToMilliseconds(), j.end_time.ToMilliseconds()) for j in ended[:-1])
        # At no moment more than MAX_RUNNING of acme's jobs ran (6 slots were free).
        for start, _ in acme_runs:
            running = sum(1 for s, e in acme_runs if s <= start < e)
            assert running <= MAX_RUNNING, acme_runs
        # globex's job did not wait for acme's backlog: it started before acme's last one.
        assert ended[-1].start_time.ToMilliseconds() < acme_runs[-1][0]


async def test_listing_one_users_jobs_by_label(tenants: Tenants) -> None:
    q = unique_queue("labels")
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as channel:
        jobs = JobServiceStub(channel)
        acme, globex = tenants.keys["acme-submitter"], tenants.keys["globex-submitter"]
        u42 = [(await jobs.SubmitJob(noop(q, delay="600s", labels={"userId": "u42"}), metadata=acme)).id
               for _ in range(3)]
        await jobs.SubmitJob(noop(q, delay="600s", labels={"userId": "u7"}), metadata=acme)
        await jobs.SubmitJob(noop(q, delay="600s", labels={"userId": "u42"}), metadata=globex)
        viewer = tenants.keys["acme-viewer"]
        seen: list[str] = []
        token = ""
        while True:
            page = await jobs.ListJobs(pb.ListJobsRequest(labels={"userId": "u42"}, page_size=2, page_token=token),
                                       metadata=viewer)
            seen += [j.id for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == sorted(u42)
        # An admin names the tenant, or sees every tenant's; another tenant named by a
        # non-admin has nothing.
        admin = await jobs.ListJobs(pb.ListJobsRequest(labels={"userId": "u42"}, tenant="acme"),
                                    metadata=tenants.admin)
        assert sorted(j.id for j in admin.jobs) == sorted(u42)
        every = await jobs.ListJobs(pb.ListJobsRequest(labels={"userId": "u42"}, queue=q, page_size=100),
                                    metadata=tenants.admin)
        assert len(every.jobs) == 4 and {j.owner for j in every.jobs} == {"acme", "globex"}
        nothing = await jobs.ListJobs(pb.ListJobsRequest(labels={"userId": "u42"}, tenant="globex"), metadata=viewer)
        assert list(nothing.jobs) == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await jobs.ListJobs(pb.ListJobsRequest(labels={"": "x"}), metadata=viewer)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "labels['']" in field_violations(err.value)


async def test_each_tenant_sees_and_administers_its_own_share_of_a_queue(tenants: Tenants) -> None:
    q = unique_queue("share")
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as channel:
        jobs, queues = JobServiceStub(channel), QueueServiceStub(channel)
        acme, globex = tenants.keys["acme-submitter"], tenants.keys["globex-submitter"]
        operator = tenants.keys["acme-operator"]
        await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[noop(q, delay="600s")] * 3), metadata=acme)
        await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[noop(q, delay="600s")] * 5), metadata=globex)
        # Counts: each tenant its own; the admin the queue's.
        mine = (await queues.GetQueue(qpb.GetQueueRequest(queue=q), metadata=tenants.keys["acme-viewer"])).queue
        theirs = (await queues.GetQueue(qpb.GetQueueRequest(queue=q), metadata=globex)).queue
        whole = (await queues.GetQueue(qpb.GetQueueRequest(queue=q), metadata=tenants.admin)).queue
        assert (mine.counts.delayed, theirs.counts.delayed, whole.counts.delayed) == (3, 5, 8)
        listed = await queues.ListQueues(qpb.ListQueuesRequest(page_size=1000), metadata=tenants.keys["acme-viewer"])
        assert q in [x.name for x in listed.queues]
        # A queue only another tenant has jobs in does not exist for acme.
        theirs_only = unique_queue("theirs")
        await jobs.SubmitJob(noop(theirs_only, delay="600s"), metadata=globex)
        listed = await queues.ListQueues(qpb.ListQueuesRequest(page_size=1000), metadata=operator)
        assert theirs_only not in [x.name for x in listed.queues]
        for call in (queues.GetQueue(qpb.GetQueueRequest(queue=theirs_only), metadata=operator),
                     queues.CleanQueue(qpb.CleanQueueRequest(queue=theirs_only, state=job_pb2.JOB_STATE_CANCELLED),
                                       metadata=operator)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # acme's operator pauses acme's share: acme's new jobs wait, globex's run.
        paused = (await queues.PauseQueue(qpb.PauseQueueRequest(queue=q), metadata=operator)).queue
        assert paused.paused
        assert not (await queues.GetQueue(qpb.GetQueueRequest(queue=q), metadata=globex)).queue.paused
        held = await jobs.SubmitJob(noop(q), metadata=acme)
        runs = await jobs.SubmitJob(noop(q), metadata=globex)
        done = await jobs.WaitJob(pb.WaitJobRequest(id=runs.id, timeout=duration_pb2.Duration(seconds=30)),
                                  metadata=globex)
        assert done.job.state == job_pb2.JOB_STATE_COMPLETED
        waiting = await jobs.GetJob(pb.GetJobRequest(id=held.id), metadata=acme)
        assert waiting.job.state == job_pb2.JOB_STATE_WAITING
        # The queue-wide host rate limit is the admin's; a concurrency of its own is acme's.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await queues.UpdateQueue(qpb.UpdateQueueRequest(queue=q, host_rate_limit=3), metadata=operator)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        capped = await queues.UpdateQueue(qpb.UpdateQueueRequest(queue=q, concurrency=1), metadata=operator)
        assert capped.queue.concurrency == 1
        await queues.ResumeQueue(qpb.ResumeQueueRequest(queue=q), metadata=operator)
        done = await jobs.WaitJob(pb.WaitJobRequest(id=held.id, timeout=duration_pb2.Duration(seconds=30)),
                                  metadata=acme)
        assert done.job.state == job_pb2.JOB_STATE_COMPLETED

        # Clean: acme's operator deletes acme's ended jobs only.
        for sub in (held, runs):
            meta = acme if sub is held else globex
            assert (await jobs.GetJob(pb.GetJobRequest(id=sub.id), metadata=meta)).job.state == \
                job_pb2.JOB_STATE_COMPLETED
        cleaned = await queues.CleanQueue(qpb.CleanQueueRequest(queue=q, state=job_pb2.JOB_STATE_COMPLETED),
                                          metadata=operator)
        assert cleaned.deleted == 1
        still = await jobs.GetJob(pb.GetJobRequest(id=runs.id), metadata=globex)
        assert still.job.state == job_pb2.JOB_STATE_COMPLETED


async def test_revoke_key_says_what_a_key_id_is(tenants: Tenants) -> None:
    async with grpc.aio.insecure_channel(tenants.stack.grpc_target) as channel:
        keys = KeyServiceStub(channel)
        for bad in ("not-a-key", "0123456789abcdeg", ""):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await keys.RevokeKey(kpb.RevokeKeyRequest(id=bad), metadata=tenants.admin)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "key's id" in field_violations(err.value)["id"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys.RevokeKey(kpb.RevokeKeyRequest(id="0123456789abcdef"), metadata=tenants.admin)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
