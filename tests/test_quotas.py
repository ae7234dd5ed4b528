"""A tenant's quota of open jobs (waiting, delayed or running): the N+1st is refused
with RESOURCE_EXHAUSTED, RetryInfo and QuotaFailure, and nothing of it is written; the
quota is per tenant, and frees as jobs end."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from conveyor.v1 import job_service_pb2, key_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from tests.support.grpc_helpers import error_info, rich_status, submit_request, unique_queue
from tests.support.processes import Stack, running_stack, stack_env

pb, kpb = job_service_pb2, key_service_pb2
ADMIN = "cvk_admin_quota-test"
QUOTA = 3


@pytest.fixture(scope="module")
def quota_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("quota"), executor=False, CONVEYOR_AUTH="on",
                       CONVEYOR_ADMIN_KEY=ADMIN, CONVEYOR_TENANT_MAX_OPEN_JOBS=str(QUOTA)) as stack:
        yield stack


@pytest.fixture
async def tenants(quota_stack: Stack) -> AsyncIterator[tuple[JobServiceStub, dict[str, tuple[tuple[str, str], ...]]]]:
    async with grpc.aio.insecure_channel(quota_stack.grpc_target) as channel:
        keys = KeyServiceStub(channel)
        metadata: dict[str, tuple[tuple[str, str], ...]] = {}
        for tenant in ("acme", "globex"):
            made = await keys.CreateKey(kpb.CreateKeyRequest(tenant=tenant, role=kpb.ROLE_SUBMITTER),
                                        metadata=(("authorization", f"Bearer {ADMIN}"),))
            metadata[tenant] = (("authorization", f"Bearer {made.secret}"),)
        yield JobServiceStub(channel), metadata


def delayed(q: str, **fields: object) -> pb.SubmitJobRequest:
    return submit_request({"queue": q, "delay": "600s", "noop": {}, **fields})


async def test_the_quota_refuses_the_n_plus_first_open_job_and_writes_nothing(
    tenants: tuple[JobServiceStub, dict[str, tuple[tuple[str, str], ...]]],
) -> None:
    jobs, who = tenants
    q = unique_queue("quota")
    made = [await jobs.SubmitJob(delayed(q), metadata=who["acme"]) for _ in range(QUOTA)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.SubmitJob(delayed(q, requestId="over-quota"), metadata=who["acme"])
    err = refused.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(err).reason == "QUOTA_EXCEEDED"
    details = rich_status(err).details
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert any(d.Unpack(retry) for d in details) and retry.retry_delay.seconds > 0
    assert any(d.Unpack(quota) for d in details) and quota.violations[0].subject == "tenant:acme"
    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=q), metadata=who["acme"])
    assert sorted(j.id for j in listed.jobs) == sorted(m.id for m in made)

    # Another tenant has a quota of its own.
    other = await jobs.SubmitJob(delayed(q), metadata=who["globex"])
    assert other.id

    # A job that ends frees its place; the refused request id was never recorded.
    await jobs.CancelJob(pb.CancelJobRequest(id=made[0].id), metadata=who["acme"])
    again = await jobs.SubmitJob(delayed(q, requestId="over-quota"), metadata=who["acme"])
    assert not again.existing

    # A batch takes what fits: one place left after another cancel, two asked for.
    await jobs.CancelJob(pb.CancelJobRequest(id=made[1].id), metadata=who["acme"])
    batch = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[delayed(q), delayed(q)], allow_partial=True),
                                  metadata=who["acme"])
    assert batch.results[0].id and [e.index for e in batch.errors] == [1]
    assert batch.errors[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


async def test_a_tenants_submit_rate_is_held_per_second(redis_url: str, tmp_path: Path) -> None:
    """20 submits in one batch against 5 a second: at most 5 per second of creation
    are made (a batch takes well under a second, so at most two seconds' worth), the
    rest are RESOURCE_EXHAUSTED with a RetryInfo; nothing of a refused one is written."""
    env = stack_env(redis_url, tmp_path, CONVEYOR_TENANT_MAX_SUBMITS_PER_SECOND="5")
    stack = Stack(redis_url, env, tmp_path / "logs")
    stack.start_gateway()
    try:
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            jobs = JobServiceStub(channel)
            q = unique_queue("rate")
            batch = await jobs.SubmitJobs(pb.SubmitJobsRequest(requests=[delayed(q) for _ in range(20)],
                                                               allow_partial=True))
            made = [r.id for r in batch.results if r.id]
            assert 5 <= len(made) <= 10 and len(batch.errors) == 20 - len(made)
            for error in batch.errors:
                assert error.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                retry = error_details_pb2.RetryInfo()
                assert any(d.Unpack(retry) for d in error.error.details)
            listed = (await jobs.ListJobs(pb.ListJobsRequest(queue=q, page_size=100))).jobs
            assert sorted(j.id for j in listed) == sorted(made)
            per_second = Counter(j.create_time.seconds for j in listed)
            assert max(per_second.values()) <= 5, per_second
    finally:
        stack.stop()
