"""User-defined job kinds end to end, with real processes: the example package
(installed into the venv as a user installs theirs, found by its entry points), one
executor serving only the example kinds (it starts no Chromium) and one serving only
`browser`. Jobs reach only the executors that serve their kind; input that breaks a
kind's schema is refused at submit with its path; progress, cancel (async and
blocking, the slot freed at once), retries per kind and per job, permanent errors,
time limits and crash recovery work for user kinds as for the built-ins."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from conveyor.processes import descendants, read_process
from conveyor.statuses import error_reason
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import (
    TERMINAL,
    field_violations,
    submit_request,
    unique_queue,
    wait_state,
    watch_all,
)
from tests.support.processes import Process, Stack, stack_env

pb, qpb = job_service_pb2, queue_service_pb2
EXAMPLE_KINDS = "chat,chat-batch,wordcount,flaky"
#: A corpus that takes the blocking word count minutes: only a cancel or a time limit ends it.
ENDLESS_COUNT: dict[str, object] = {"generate": {"words": 50_000_000, "seed": 1}}


class Pools:
    def __init__(self, stack: Stack, plain: Process, browsers: Process) -> None:
        self.stack, self.plain, self.browsers = stack, plain, browsers


@pytest.fixture(scope="module")
def pools(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pools]:
    data = tmp_path_factory.mktemp("kinds")
    env = stack_env(redis_url, data, CONVEYOR_STALL_TIMEOUT_SECONDS="2", CONVEYOR_RETRY_BASE_SECONDS="0.1")
    stack = Stack(redis_url, env, data / "logs")
    stack.start_gateway()
    # One slot: a second job can start only once the first one's slot is free.
    plain = stack.start_executor(CONVEYOR_EXECUTOR_KINDS=EXAMPLE_KINDS, CONVEYOR_EXECUTOR_SLOTS="1")
    browsers = stack.start_executor(CONVEYOR_EXECUTOR_KINDS="browser")
    yield Pools(stack, plain, browsers)
    stack.stop()
    stack.print_problems()


@pytest.fixture
async def stubs(pools: Pools) -> AsyncIterator[tuple[JobServiceStub, QueueServiceStub]]:
    async with grpc.aio.insecure_channel(pools.stack.grpc_target) as channel:
        yield JobServiceStub(channel), QueueServiceStub(channel)


def kind_job(name: str, input: dict[str, object], **fields: object) -> pb.SubmitJobRequest:
    return submit_request({"queue": fields.pop("queue", unique_queue("kinds")), "kind": {"name": name, "input": input},
                           **fields})


def chromium_under(pid: int) -> list[str]:
    found = []
    for child in descendants(pid):
        info = read_process(child)
        if info is not None and "chromium" in info.cmdline:
            found.append(info.cmdline)
    return found


async def workers_by_kind(queues: QueueServiceStub) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for w in (await queues.ListWorkers(qpb.ListWorkersRequest())).workers:
        for kind in w.kinds:
            out.setdefault(kind, set()).add(w.id)
    return out


async def test_jobs_reach_only_the_executors_serving_their_kind(
    pools: Pools, stubs: tuple[JobServiceStub, QueueServiceStub], pages_url: str
) -> None:
    jobs, queues = stubs
    served = await workers_by_kind(queues)
    assert set(served) == {"chat", "chat-batch", "wordcount", "flaky", "browser"}
    (plain_id,) = served["chat"]
    (browser_id,) = served["browser"]
    assert plain_id != browser_id and served["wordcount"] == {plain_id}

    chat = await jobs.SubmitJob(kind_job("chat", {"messages": [{"role": "user", "content": "hello"}]}))
    browser = await jobs.SubmitJob(submit_request({"queue": unique_queue("kinds"), "browser": {"steps": [
        {"navigate": {"url": f"{pages_url}/form.html"}}]}}))
    done_chat = await wait_state(jobs, chat.id, TERMINAL)
    done_browser = await wait_state(jobs, browser.id, TERMINAL, timeout=60)
    assert done_chat.state == job_pb2.JOB_STATE_COMPLETED and done_chat.kind == "chat"
    assert done_chat.attempts[0].worker == plain_id
    assert done_chat.result.output.struct_value.fields["reply"].struct_value.fields["role"].string_value == "assistant"
    assert done_chat.kind_task.name == "chat"
    assert done_browser.state == job_pb2.JOB_STATE_COMPLETED and done_browser.attempts[0].worker == browser_id
    # The plain executor never started a browser; the browser one did.
    assert chromium_under(pools.plain.pid) == []
    assert chromium_under(pools.browsers.pid) != []

    listed = await jobs.ListJobs(pb.ListJobsRequest(queue=done_chat.queue, kind="chat"))
    assert [j.id for j in listed.jobs] == [chat.id]


async def test_input_that_breaks_the_schema_is_refused_at_submit_with_its_path(
    stubs: tuple[JobServiceStub, QueueServiceStub],
) -> None:
    jobs, _ = stubs
    cases: tuple[tuple[str, dict[str, object], str], ...] = (
        ("wordcount", {"texts": ["a"], "top": "many"}, "kind.input.top"),
        ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "kind.input.messages[0].role"),
        ("flaky", {"fail_first": -1}, "kind.input.fail_first"),
    )
    for name, bad, path in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.SubmitJob(kind_job(name, bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert path in field_violations(refused.value), field_violations(refused.value)
    for name, why in (("no-such-kind", "no executor has registered"), ("noop", "given as the 'noop' task")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.SubmitJob(kind_job(name, {}))
        assert why in field_violations(refused.value)["kind.name"]


async def test_progress_and_retries_per_kind_and_per_job(stubs: tuple[JobServiceStub, QueueServiceStub]) -> None:
    jobs, _ = stubs
    # The kind's own policy: 4 attempts, so two failures then done.
    flaky = await jobs.SubmitJob(kind_job("flaky", {"fail_first": 2}))
    watched = await watch_all(jobs, flaky.id, after_sequence=0)
    messages = [m.event.message for m in watched if m.WhichOneof("kind") == "event"]
    done = (await jobs.GetJob(pb.GetJobRequest(id=flaky.id))).job
    assert done.state == job_pb2.JOB_STATE_COMPLETED and done.attempt == 3 and done.max_attempts == 4
    assert {"attempt 1", "attempt 2", "attempt 3", "succeeded on attempt 3"} <= set(messages)
    assert [a.outcome for a in done.attempts] == [job_pb2.JOB_STATE_FAILED] * 2 + [job_pb2.JOB_STATE_COMPLETED]
    assert error_reason_of(done.attempts[0]) == "FLAKY_RETRYABLE"

    # The job's own: two attempts, and a fixed 3 s backoff instead of the kind's 0.2 s.
    own = await jobs.SubmitJob(kind_job("flaky", {"fail_first": 5}, maxAttempts=2,
                                        retry={"backoff": "BACKOFF_FIXED", "base": "3s"}))
    delayed = await wait_state(jobs, own.id, {job_pb2.JOB_STATE_DELAYED})
    wait_s = (delayed.run_time.ToMilliseconds() - delayed.attempts[0].end_time.ToMilliseconds()) / 1000
    assert 2.3 <= wait_s <= 3.7, wait_s
    failed = await wait_state(jobs, own.id, TERMINAL, timeout=20)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.attempt == 2


def error_reason_of(attempt: job_pb2.AttemptRecord) -> str:
    return error_reason(attempt.error)


async def test_permanent_errors_and_time_limits(stubs: tuple[JobServiceStub, QueueServiceStub]) -> None:
    jobs, _ = stubs
    permanent = await jobs.SubmitJob(kind_job("flaky", {"permanent": True}))
    failed = await wait_state(jobs, permanent.id, TERMINAL)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.attempt == 1
    assert error_reason_of(failed.attempts[0]) == "FLAKY_PERMANENT"

    slow_inputs: tuple[tuple[str, dict[str, object]], ...] = (
        ("flaky", {"fail_first": 0, "sleep": 60}), ("wordcount", ENDLESS_COUNT),
    )
    for name, input in slow_inputs:
        started = time.monotonic()
        slow = await jobs.SubmitJob(kind_job(name, input, timeout="1s", maxAttempts=1))
        ended = await wait_state(jobs, slow.id, TERMINAL, timeout=20)
        assert ended.state == job_pb2.JOB_STATE_FAILED, name
        assert error_reason_of(ended.attempts[0]) == "JOB_TIMEOUT", name
        assert time.monotonic() - started < 10, name


async def test_cancel_frees_the_slot_at_once_for_async_and_blocking_handlers(
    stubs: tuple[JobServiceStub, QueueServiceStub],
) -> None:
    """The plain executor has one slot: the job after a cancelled one starts only if
    the cancel gave the slot back."""
    jobs, _ = stubs
    long_inputs: tuple[tuple[str, dict[str, object]], ...] = (
        ("flaky", {"fail_first": 0, "sleep": 600}), ("wordcount", ENDLESS_COUNT),
    )
    for name, input in long_inputs:
        q = unique_queue("cancel")
        long = await jobs.SubmitJob(kind_job(name, input, queue=q))
        await wait_state(jobs, long.id, {job_pb2.JOB_STATE_ACTIVE})
        nxt = await jobs.SubmitJob(kind_job("flaky", {"fail_first": 0}, queue=q))
        started = time.monotonic()
        cancelled = (await jobs.CancelJob(pb.CancelJobRequest(id=long.id))).job
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED, name
        done = await wait_state(jobs, nxt.id, TERMINAL)
        assert done.state == job_pb2.JOB_STATE_COMPLETED, name
        assert time.monotonic() - started < 2.5, (name, time.monotonic() - started)


async def test_a_user_kind_outlives_its_executor_crashing(
    pools: Pools, stubs: tuple[JobServiceStub, QueueServiceStub]
) -> None:
    """SIGKILL the only executor of the example kinds mid-job: the job waits (a known
    kind with no live executor waits like any job without a free slot), and a new
    executor of those kinds runs it again."""
    jobs, _ = stubs
    q = unique_queue("crash")
    running = await jobs.SubmitJob(kind_job("flaky", {"fail_first": 0, "sleep": 3}, queue=q))
    await wait_state(jobs, running.id, {job_pb2.JOB_STATE_ACTIVE})
    pools.plain.kill()
    waiting = await jobs.SubmitJob(kind_job("chat", {"messages": [{"role": "user", "content": "hi"}]}, queue=q))
    # Recovered by the stall timeout (2 s here): back in line, with nobody to run it.
    await wait_state(jobs, running.id, {job_pb2.JOB_STATE_WAITING}, timeout=20)
    # (Until the dead executor's registration runs out, admission may hand the job to
    # it: it stays WAITING all the same, and is handed over again later.)
    assert (await jobs.GetJob(pb.GetJobRequest(id=waiting.id))).job.state == job_pb2.JOB_STATE_WAITING
    pools.plain = pools.stack.start_executor(CONVEYOR_EXECUTOR_KINDS=EXAMPLE_KINDS, CONVEYOR_EXECUTOR_SLOTS="1")
    for job_id in (running.id, waiting.id):
        done = await wait_state(jobs, job_id, TERMINAL, timeout=30)
        assert done.state == job_pb2.JOB_STATE_COMPLETED
    again = (await jobs.GetJob(pb.GetJobRequest(id=running.id))).job
    assert again.attempt == 2 and error_reason_of(again.attempts[0]) == "EXECUTOR_LOST"
