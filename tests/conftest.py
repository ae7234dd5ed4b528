"""Fixtures: a real redis-server for the session, and real gateway/executor
processes on it, each stack under a key prefix of its own."""

from __future__ import annotations

import os

# Before grpc is imported: gRPC core's fork support restarts its event-engine threads in
# a child forked while calls are in flight, and a child that runs Python before exec
# (Popen with preexec_fn, as the stacks do for PDEATHSIG) then aborts on closed fds
# (SIGABRT, "epoll_wait error: Bad file descriptor"). Nothing here forks to keep gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from conveyor.store.job_store import JobStore, connect
from conveyor.store.records import StorePolicy
from conveyor.transport import RUN_JOB_ACTOR, TRANSPORT_QUEUE, transport_namespace
from conveyor.v1 import job_service_pb2, job_service_pb2_grpc, queue_service_pb2, queue_service_pb2_grpc
from tests.support.processes import Process, Stack, stack_env, start_redis

#: Bounds of the end-of-session read of every job (pages of at most 1,000 jobs).
FINAL_READ_PAGES = 200
FINAL_READ_JOBS = 50_000
FINAL_READ_CHUNK = 500


def unreadable_jobs(s: Stack) -> list[str]:
    """Every way a job of the stack fails to read: GetJob of each job in the store's
    index, the unfiltered ListJobs through all its pages, and each queue's ListJobs.
    A job deleted in between (NOT_FOUND) is fine; any other error is a problem."""
    problems: list[str] = []
    with s.redis() as r:
        ids = [m.decode() for m in r.zrange(f"{s.prefix}:jobs", 0, FINAL_READ_JOBS - 1)]
    with grpc.insecure_channel(s.grpc_target) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        queues = queue_service_pb2_grpc.QueueServiceStub(ch)
        for start in range(0, len(ids), FINAL_READ_CHUNK):
            calls = [(job_id, jobs.GetJob.future(job_service_pb2.GetJobRequest(id=job_id), timeout=60))
                     for job_id in ids[start:start + FINAL_READ_CHUNK]]
            for job_id, call in calls:
                try:
                    call.result()
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        problems.append(f"GetJob {job_id}: {err.code().name} {err.details()}")

        def pages(what: str, queue: str = "") -> None:
            token = ""
            for _ in range(FINAL_READ_PAGES):
                try:
                    page = jobs.ListJobs(
                        job_service_pb2.ListJobsRequest(queue=queue, page_size=1000, page_token=token), timeout=60)
                except grpc.RpcError as err:
                    problems.append(f"ListJobs {what}: {err.code().name} {err.details()}")
                    return
                token = page.next_page_token
                if not token:
                    return

        pages("of every queue")
        token = ""
        for _ in range(FINAL_READ_PAGES):
            listed = queues.ListQueues(
                queue_service_pb2.ListQueuesRequest(page_size=1000, page_token=token), timeout=60)
            for q in listed.queues:
                pages(f"of queue {q.name!r}", q.name)
            token = listed.next_page_token
            if not token:
                break
    return problems


#: The test files that take the suite longest (a minute or more each, by --durations),
#: run first. The suite runs on pytest-xdist workers, each taking whole files
#: (.ci/test.sh: -n, --dist loadfile): a long file left for last keeps one worker busy
#: after the others have finished. The order within a file is kept.
SLOWEST_FIRST = (
    "tests/test_cli.py",
    "tests/acceptance/test_acceptance.py",
    "tests/test_tls.py",
    "tests/browser/test_pool.py",
    "tests/test_fuzz.py",
    "tests/test_recovery.py",
    "tests/test_sentinel.py",
    "tests/test_ts_sdk.py",
    "tests/test_artifacts_s3.py",
    "tests/test_schedules.py",
    "tests/test_mixed_load.py",
    "tests/test_metrics.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield proc, url
    proc.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: tuple[Process, str]) -> str:
    return redis_server[1]


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[JobStore]:
    """A store under a fresh key prefix (no services attached)."""
    import uuid

    client = connect(redis_url)
    prefix = f"s{uuid.uuid4().hex[:8]}"
    yield JobStore(client, prefix, StorePolicy(transport_namespace(prefix), TRANSPORT_QUEUE, RUN_JOB_ACTOR))
    await client.aclose()


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway and one executor shared by the session's tests (tests use queues of
    their own so they do not see each other's jobs)."""
    data = tmp_path_factory.mktemp("stack")
    s = Stack(redis_url, stack_env(redis_url, data), data / "logs")
    s.start_gateway()
    s.start_executor()
    yield s
    try:
        # No job the suite made may fail a read (issue 10): checked once, at the end.
        problems = unreadable_jobs(s)
        assert not problems, f"{len(problems)} reads of the session's jobs failed:\n" + "\n".join(problems[:50])
    finally:
        s.stop()
        s.print_problems()


@pytest.fixture
def make_stack(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Stacks for tests that kill or stop services; started by the test itself."""
    made: list[Stack] = []

    def make(**overrides: str) -> Stack:
        s = Stack(redis_url, stack_env(redis_url, tmp_path / f"stack{len(made)}", **overrides), tmp_path / "logs")
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
        s.print_problems()


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        yield ch


@pytest.fixture
def jobs(channel: grpc.aio.Channel) -> job_service_pb2_grpc.JobServiceStub:
    return job_service_pb2_grpc.JobServiceStub(channel)


@pytest.fixture
def queues(channel: grpc.aio.Channel) -> queue_service_pb2_grpc.QueueServiceStub:
    return queue_service_pb2_grpc.QueueServiceStub(channel)


@pytest.fixture
async def stack_redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()
