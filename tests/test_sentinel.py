"""Redis failover with Sentinel: a primary, two replicas and three sentinels (real
redis-server and redis-sentinel processes), a gateway and an executor given only the
Sentinel URL. The primary is SIGKILLed while clients submit; the sentinels promote a
replica and both services follow it without a restart. With
CONVEYOR_REDIS_WAIT_REPLICAS=2 (every replica) every submit the gateway acknowledged was
on both replicas before the reply, so whichever is promoted has it and none is lost: each
one completes, with its result. (WAIT 1 is not enough: Sentinel promotes by the offsets
it last saw, and can pick the replica that did not have the job yet.) Until the killed
server is back as a replica, the new primary has one replica and submits are refused
NOT_REPLICATED; the test brings it back, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2

from conveyor.redis_connection import connect
from conveyor.redis_url import parse_sentinel_url
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore
from conveyor.transport import store_policy
from conveyor.v1 import job_pb2, job_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from tests.support.grpc_helpers import TERMINAL, error_info, submit_request, unique_queue
from tests.support.processes import Process, Stack, stack_env
from tests.support.sentinel import replicas_in_sync, start_sentinel_group, start_server, wait_for_failover
from tests.test_store import assert_counters_match

SUBMITTERS = 4
REPLICAS = 2
#: Jobs acknowledged before the kill, and after the promotion, at the least.
BEFORE, AFTER = 40, 40


def word(n: int) -> str:
    """A word of letters only (the wordcount kind counts letters), one per job."""
    out = ""
    while True:
        out += chr(ord("a") + n % 26)
        n //= 26
        if n == 0:
            return "job" + out


def runs(executor: Process) -> Counter[str]:
    """Attempts the executor started, per job (from its JSON log)."""
    started: Counter[str] = Counter()
    for line in executor.log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "job started":
                started[str(entry["job_id"])] += 1
    return started


def test_a_sentinel_url_is_checked_when_the_settings_load() -> None:
    with pytest.raises(ValueError, match="no service name"):
        Settings(redis_url="redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="TLS needs rediss"):
        Settings(redis_url="redis+sentinel://127.0.0.1:26379/conveyor?ssl_ca_certs=/ca.pem")
    target = parse_sentinel_url("redis+sentinel://u:p%40ss@127.0.0.1:26379,[::1]/conveyor/2?sentinel_password=s")
    assert target.sentinels == [("127.0.0.1", 26379), ("::1", 26379)]
    assert (target.service, target.connection["db"], target.connection["password"]) == ("conveyor", 2, "p@ss")
    assert target.sentinel["password"] == "s"


async def test_a_submit_no_replica_confirms_in_time_is_refused_unavailable(make_stack: Callable[..., Stack]) -> None:
    """With CONVEYOR_REDIS_WAIT_REPLICAS=1 on a Redis without replicas, no submit is
    acknowledged: each is UNAVAILABLE (NOT_REPLICATED) naming the job, which is on the
    primary; sent again with its request id it is the same job, still unconfirmed."""
    s = make_stack(CONVEYOR_REDIS_WAIT_REPLICAS="1", CONVEYOR_REDIS_WAIT_TIMEOUT_SECONDS="0.2")
    s.start_gateway()
    queue = unique_queue("durable")
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        request = submit_request({"queue": queue, "requestId": "once", "delay": "600s", "noop": {}})
        seen = []
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.SubmitJob(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info(err.value)
            assert (info.reason, info.metadata["replicas"], info.metadata["wanted"]) == ("NOT_REPLICATED", "0", "1")
            seen.append(info.metadata["job_id"])
        assert seen[0] == seen[1]
        job = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=seen[0]))).job
        assert job.state == job_pb2.JOB_STATE_DELAYED  # on the primary, as submitted
        batch = await jobs.SubmitJobs(job_service_pb2.SubmitJobsRequest(allow_partial=True, requests=[
            submit_request({"queue": queue, "delay": "600s", "noop": {}}) for _ in range(3)]), timeout=10)
        assert [e.index for e in batch.errors] == [0, 1, 2]
        assert {e.error.code for e in batch.errors} == {code_pb2.UNAVAILABLE}


async def test_gateway_and_executor_follow_a_failover_and_no_acknowledged_submit_is_lost(tmp_path: Path) -> None:
    group = start_sentinel_group(tmp_path / "redis", replicas=REPLICAS, sentinels=3)
    env = stack_env(group.url, tmp_path / "data", CONVEYOR_REDIS_WAIT_REPLICAS=str(REPLICAS),
                    CONVEYOR_REDIS_WAIT_TIMEOUT_SECONDS="2", CONVEYOR_STALL_TIMEOUT_SECONDS="3",
                    # Every completed job kept, to be checked (by default a queue keeps its
                    # newest 100: past that the oldest were deleted, read as lost jobs).
                    CONVEYOR_KEEP_COMPLETED="100000",
                    CONVEYOR_HANDOVER_TIMEOUT_SECONDS="3")
    s = Stack(group.url, env, tmp_path / "logs")
    queue = unique_queue("failover")
    acked: dict[str, tuple[str, str]] = {}  # request id -> (job id, its word)
    refusals: Counter[str] = Counter()
    stop = asyncio.Event()
    try:
        gateway = s.start_gateway()
        executor = s.start_executor()
        async with grpc.aio.insecure_channel(s.grpc_target) as ch:
            jobs = JobServiceStub(ch)

            async def submitter(n: int) -> None:
                """Submits one at a time; one refused is sent again with its request id
                until it is acknowledged (or the test stops)."""
                for i in range(100_000):
                    if stop.is_set():
                        return
                    rid, text = f"r{n}-{i}", word(n * 100_000 + i)
                    request = submit_request({"queue": queue, "requestId": rid, "maxAttempts": 5,
                                              "kind": {"name": "wordcount", "input": {"texts": [text]}}})
                    while not stop.is_set():
                        try:
                            reply = await jobs.SubmitJob(request, timeout=10)
                        except grpc.aio.AioRpcError as err:
                            # Redis unreachable, or the job not yet on a replica: try again.
                            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
                            refusals[error_info(err).reason] += 1
                            await asyncio.sleep(0.05)
                        else:
                            acked[rid] = (reply.id, text)
                            break

            async def until(what: str, predicate: object, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while not predicate():  # type: ignore[operator]
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(submitter(n)) for n in range(SUBMITTERS)]
            await until(f"{BEFORE} acknowledged submits", lambda: len(acked) >= BEFORE, 30)
            old = group.primary_port()
            group.servers[old].kill()  # SIGKILL, by pid
            killed_at = len(acked)
            new = await asyncio.to_thread(wait_for_failover, group, old)
            assert new != old and group.role(new) == "master", (old, new, group.logs())
            promoted_at = len(acked)
            # The dead server comes back (empty, on its port) as a replica of the new
            # primary, as an operator restarts a failed node; the primary then has every
            # replica WAIT asks for. (Left to come back as a primary, it waits for the
            # sentinels to correct its role: they ask every 10 s and correct 8 s after,
            # seen past 60 s on a loaded machine; that is Redis's part, not ours.)
            start_server(group, new, port=old)
            await until("the old primary back as a replica",
                        lambda: replicas_in_sync(group, new) == REPLICAS, 60)
            # New submits go through the gateway to the promoted primary (and its replica).
            await until(f"{AFTER} submits acknowledged after the promotion",
                        lambda: len(acked) >= promoted_at + AFTER, 30)
            stop.set()
            await asyncio.gather(*tasks)

            # Every acknowledged job reaches a terminal state: COMPLETED, with its result.
            ids = {job_id: text for job_id, text in acked.values()}
            done: dict[str, job_pb2.Job] = {}
            deadline = time.monotonic() + 30
            while len(done) < len(ids):
                assert time.monotonic() < deadline, f"{len(ids) - len(done)} of {len(ids)} jobs not finished"
                pending = [i for i in ids if i not in done]
                got = await asyncio.gather(*(jobs.GetJob(job_service_pb2.GetJobRequest(id=i), timeout=10)
                                             for i in pending))
                done.update({r.job.id: r.job for r in got if r.job.state in TERMINAL})
                await asyncio.sleep(0.2)
            for job_id, job in done.items():
                assert job.state == job_pb2.JOB_STATE_COMPLETED, (job_id, job.state, job.error)
                top = job.result.output.struct_value.fields["top"].list_value.values[0].struct_value.fields
                assert top["word"].string_value == ids[job_id], job_id

            # Neither service was restarted (nor a worker process of the executor).
            assert gateway.alive() and executor.alive(), "a service died"
            restarts = executor.log().count('"event": "worker started"') - 1
            assert restarts == 0, f"the executor's worker process was restarted {restarts} time(s)"

        # At least once: a job runs again only when the attempt it was running was lost
        # with the primary (its finish unreplicated or failing during the failover): a
        # few, at most each slot's job at the kill plus the ones it took back.
        started = runs(executor)
        assert all(started[i] >= 1 for i in ids), "a completed job the executor never started"
        again = {i: n for i, n in started.items() if i in ids and n > 1}
        slots = int(env["CONVEYOR_EXECUTOR_SLOTS"])
        assert len(again) <= 2 * slots and all(n <= 2 for n in again.values()), f"jobs run again: {again}"
        # The store's counters and indexes agree on the promoted primary.
        client = connect(group.url)
        try:
            await assert_counters_match(JobStore(client, s.prefix, store_policy(Settings(key_prefix=s.prefix))),
                                        queue)
        finally:
            await client.aclose()
        print(f"acked {len(ids)} ({killed_at} before the kill, {promoted_at - killed_at} while failing over); "
              f"refusals {dict(refusals)}; run again {len(again)}")
    finally:
        stop.set()
        s.stop()
        s.print_problems()
        group.stop()
