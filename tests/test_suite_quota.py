"""A suite is submitted all or nothing: one that would take its tenant past the quota
of open jobs is refused before any of its jobs is made, and one refused midway anyway
(here: a test's deduplication key already held) leaves no job of it open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from conveyor.v1 import job_pb2, job_service_pb2, key_service_pb2, suite_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.key_service_pb2_grpc import KeyServiceStub
from conveyor.v1.suite_service_pb2_grpc import SuiteServiceStub
from tests.support.grpc_helpers import error_info, rich_status, submit_request, unique_queue
from tests.support.processes import Stack, running_stack

pb, spb = job_service_pb2, suite_service_pb2
ADMIN = "cvk_admin_suite-quota-test"
QUOTA = 3
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def quota_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("suite-quota"), executor=False, CONVEYOR_AUTH="on",
                       CONVEYOR_ADMIN_KEY=ADMIN, CONVEYOR_TENANT_MAX_OPEN_JOBS=str(QUOTA)) as stack:
        yield stack


@pytest.fixture
async def clients(quota_stack: Stack) -> AsyncIterator[tuple[JobServiceStub, SuiteServiceStub, KeyServiceStub]]:
    async with grpc.aio.insecure_channel(quota_stack.grpc_target) as channel:
        yield JobServiceStub(channel), SuiteServiceStub(channel), KeyServiceStub(channel)


async def tenant_key(keys: KeyServiceStub, tenant: str) -> Metadata:
    made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(tenant=tenant, role=key_service_pb2.ROLE_SUBMITTER),
                                metadata=(("authorization", f"Bearer {ADMIN}"),))
    return (("authorization", f"Bearer {made.secret}"),)


def suite_test(name: str, job: dict[str, Any]) -> spb.SuiteTest:
    test = spb.SuiteTest(name=name)
    json_format.ParseDict(job, test.job)
    return test


def waiting(queue: str, **fields: Any) -> dict[str, Any]:
    """A job that stays open (no executor runs this stack's jobs)."""
    return {"queue": queue, "noop": {}, **fields}


async def in_queue(jobs: JobServiceStub, queue: str, who: Metadata) -> list[job_pb2.Job]:
    return list((await jobs.ListJobs(pb.ListJobsRequest(queue=queue), metadata=who)).jobs)


async def test_a_suite_past_the_quota_is_refused_before_any_job_is_made(
    clients: tuple[JobServiceStub, SuiteServiceStub, KeyServiceStub],
) -> None:
    jobs, suites, keys = clients
    who = await tenant_key(keys, "initech")
    q = unique_queue("suite-quota")
    held = await jobs.SubmitJob(submit_request(waiting(q)), metadata=who)  # 1 of 3 open

    three = spb.SubmitSuiteRequest(name="too big", setup=[suite_test("setup", waiting(q))],
                                   tests=[suite_test("a", waiting(q)), suite_test("b", waiting(q))])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await suites.SubmitSuite(three, metadata=who)
    err = refused.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(err)
    assert info.reason == "QUOTA_EXCEEDED"
    assert (info.metadata["limit"], info.metadata["open"], info.metadata["requested"]) == ("3", "1", "3")
    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(quota) for d in rich_status(err).details)
    assert quota.violations[0].subject == "tenant:initech"
    # Nothing of the suite was written: the tenant's one job is all there is.
    assert [j.id for j in await in_queue(jobs, q, who)] == [held.id]

    # Two tests fit in what is left: that suite is made whole, its record with it.
    two = spb.SubmitSuiteRequest(name="fits", tests=[suite_test("a", waiting(q)), suite_test("b", waiting(q))])
    made = await suites.SubmitSuite(two, metadata=who)
    suite = (await suites.GetSuite(spb.GetSuiteRequest(id=made.suite_id), metadata=who)).suite
    assert [t.name for t in suite.tests] == ["a", "b"] and suite.counts.waiting == 2
    assert len(await in_queue(jobs, q, who)) == 3


async def test_a_suite_refused_midway_leaves_none_of_its_jobs_open(
    clients: tuple[JobServiceStub, SuiteServiceStub, KeyServiceStub],
) -> None:
    jobs, suites, keys = clients
    who = await tenant_key(keys, "hooli")
    q = unique_queue("suite-midway")
    holder = await jobs.SubmitJob(submit_request(waiting(q, dedupKey="nightly")), metadata=who)

    # The setup is made (and its tests' batch submitted) before the test is refused
    # (its deduplication key is taken; within the quota, 1 + 2 of 3): the suite must not
    # stay half submitted.
    request = spb.SubmitSuiteRequest(name="half", setup=[suite_test("setup", waiting(q))], tests=[
        suite_test("test", waiting(q, dedupKey="nightly")),
    ])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await suites.SubmitSuite(request, metadata=who)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS

    listed = {j.id: j for j in await in_queue(jobs, q, who)}
    others = [j for job_id, j in listed.items() if job_id != holder.id]
    assert [j.labels["suite_test"] for j in others] == ["setup"]
    assert all(j.state == job_pb2.JOB_STATE_CANCELLED for j in others), [j.state for j in others]
    assert all(error_reason_of(j) == "SUITE_NOT_SUBMITTED" for j in others)
    # The job that held the key is not the suite's: it stays as it was.
    assert listed[holder.id].state == job_pb2.JOB_STATE_WAITING
    # And the withdrawn jobs freed their places: two more open jobs fit in the quota.
    for _ in range(QUOTA - 1):
        await jobs.SubmitJob(submit_request(waiting(q)), metadata=who)


def error_reason_of(job: job_pb2.Job) -> str:
    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
