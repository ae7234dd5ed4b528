"""Scale-out on one machine, under kills: two gateways, three executors (one of them
browser-less: CONVEYOR_EXECUTOR_KINDS names only light kinds, so it starts no
Chromium), one Redis. A bounded load of jobs goes in through both gateways while an
executor and then a gateway are SIGKILLed by pid. Then:

- no job is lost: every acknowledged submit's job, and every submit retried on the
  other gateway with the same request_id after its gateway died, ends COMPLETED, and
  the queue holds exactly one job per request_id (a retried submit made no second job);
- no job runs twice beyond the at-least-once contract: a handler run (the run-log kind
  writes each one down) happens once per attempt, and a job runs again only when the
  worker process running it was killed;
- admission gave no browser job to the browser-less executor;
- the store's invariants hold, during the load and after it: the counter/index check of
  tests/test_mixed_load.py (counters = index sizes = the in-flight set) and
  tests/test_store.assert_counters_match (counters = the jobs' own states).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
import redis.asyncio as aioredis

from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.transport import store_policy
from conveyor.v1 import job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue
from tests.support.page_server import serve_page
from tests.support.processes import Process, Stack
from tests.support.run_log_kind import RUN_LOG_ENV
from tests.test_mixed_load import Snapshot, snapshot
from tests.test_recovery import worker_pids
from tests.test_store import assert_counters_match

pb, qpb = job_service_pb2, queue_service_pb2

LIGHT_JOBS = 480  # run-log jobs, 0.05-0.25 s each
BROWSER_JOBS = 4
CLIENTS = 8
CONCURRENCY = 100  # the queue's limit: above the executors' slots, so slots are the bound
KILL_EXECUTOR_AT = 0.3  # fraction of the submits
KILL_GATEWAY_AT = 0.55
DRAIN_SECONDS = 45.0
CALL_TIMEOUT = 10.0
PAGE = b"<html><body><p id='p'>scale-out</p></body></html>"


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with serve_page(PAGE, "/p.html") as url:
        yield url


def started_job_ids(executor: Process) -> set[str]:
    ids = set()
    for line in executor.log().splitlines():
        if '"job started"' in line:
            with contextlib.suppress(ValueError, KeyError):
                ids.add(str(json.loads(line)["job_id"]))
    return ids


@pytest.mark.timeout(180)
async def test_two_gateways_three_executors_lose_nothing_under_kills(
    make_stack: Callable[..., Stack], tmp_path: Path, page_url: str
) -> None:
    run_log = tmp_path / "runs.log"
    stack = make_stack(
        CONVEYOR_KINDS="tests.support.run_log_kind",
        **{RUN_LOG_ENV: str(run_log)},
        CONVEYOR_EXECUTOR_SLOTS="4",
        CONVEYOR_BROWSER_SLOTS="1",
        CONVEYOR_STALL_TIMEOUT_SECONDS="4",
        CONVEYOR_HANDOVER_TIMEOUT_SECONDS="4",
        CONVEYOR_EXECUTOR_TTL_SECONDS="4",
        CONVEYOR_KEEP_COMPLETED="100000",
    )
    doomed_gateway = stack.start_gateway()
    stack.start_second_gateway()
    doomed_executor = stack.start_executor()  # every kind, browsers included
    stack.start_executor()  # every kind, browsers included
    light = stack.start_executor(CONVEYOR_EXECUTOR_KINDS="noop,run-log")  # browser-less
    queue = unique_queue("scale")
    limits = {queue: CONCURRENCY}
    targets = list(stack.gateway_targets)
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [JobServiceStub(ch) for ch in channels]
    client = aioredis.Redis.from_url(stack.redis_url)
    problems: list[str] = []
    started = time.monotonic()

    # The requests, made up front: each with a request_id of its own.
    requests: list[job_service_pb2.SubmitJobRequest] = []
    for i in range(LIGHT_JOBS):
        requests.append(submit_request({
            "queue": queue, "maxAttempts": 5, "requestId": f"rl-{i}-{uuid.uuid4().hex[:6]}",
            "kind": {"name": "run-log", "input": {"sleep": 0.05 + (i % 5) * 0.05}}}))
    for i in range(BROWSER_JOBS):
        requests.insert(LIGHT_JOBS * (i + 1) // (BROWSER_JOBS + 1), submit_request({
            "queue": queue, "maxAttempts": 5, "requestId": f"br-{i}-{uuid.uuid4().hex[:6]}",
            "browser": {"steps": [{"navigate": {"url": page_url}},
                                  {"extract": {"target": {"selector": "#p"}, "key": "p"}}]}}))
    ids: dict[str, str] = {}  # request_id -> job id
    retried_elsewhere = 0
    dead: set[int] = set()  # gateways (by index) known dead
    next_request = 0
    killed_pids: set[int] = set()
    kill_executor, kill_gateway = asyncio.Event(), asyncio.Event()

    def check(snap: Snapshot, when: str) -> None:
        found = snap.violations((queue,), limits)
        if found and len(problems) < 20:
            problems.extend(f"[{when} t={snap.taken_at - started:.1f}s] {v}" for v in found)

    async def submit_one(who: int, req: job_service_pb2.SubmitJobRequest) -> None:
        nonlocal retried_elsewhere
        gateway = who % len(stubs)
        for attempt in range(6):
            if gateway in dead:
                gateway = 1 - gateway
            try:
                sub = await stubs[gateway].SubmitJob(req, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                # Its gateway is gone (or going): the same request, same request_id, on the other.
                if gateway == 0 and not doomed_gateway.alive():
                    dead.add(0)
                gateway = 1 - gateway
                retried_elsewhere += 1
                await asyncio.sleep(0.05 * attempt)
                continue
            previous = ids.setdefault(req.request_id, sub.id)
            if previous != sub.id:
                problems.append(f"request_id {req.request_id} gave job {previous}, then job {sub.id}")
            return
        problems.append(f"request_id {req.request_id} was never accepted by either gateway")

    async def client_loop(who: int) -> None:
        nonlocal next_request
        while next_request < len(requests):
            req = requests[next_request]
            next_request += 1
            if next_request >= len(requests) * KILL_EXECUTOR_AT:
                kill_executor.set()
            if next_request >= len(requests) * KILL_GATEWAY_AT:
                kill_gateway.set()
            await submit_one(who, req)
            await asyncio.sleep(0.01)

    async def killer() -> None:
        await kill_executor.wait()
        killed_pids.update(worker_pids(doomed_executor))
        doomed_executor.kill()  # SIGKILL, by pid; its worker processes die with it
        await kill_gateway.wait()
        doomed_gateway.kill()  # SIGKILL mid-load: calls on it fail, clients move over

    async def watch_invariants(stop: asyncio.Event) -> None:
        while not stop.is_set():
            check(await snapshot(client, stack.prefix, (queue,)), "load")
            await asyncio.sleep(0.5)

    try:
        await QueueServiceStub(channels[1]).UpdateQueue(qpb.UpdateQueueRequest(queue=queue, concurrency=CONCURRENCY))
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_invariants(stop))
        await asyncio.wait_for(asyncio.gather(killer(), *(client_loop(i) for i in range(CLIENTS))), 90)
        submitted_at = time.monotonic()
        stop.set()
        await watcher
        assert not doomed_executor.alive() and not doomed_gateway.alive()
        # Clients still sending to the killed gateway had to move over (with their request_id).
        assert retried_elsewhere >= 1

        # ---- the drain -----------------------------------------------------------
        drained = False
        final = await snapshot(client, stack.prefix, (queue,))
        while time.monotonic() - submitted_at < DRAIN_SECONDS:
            final = await snapshot(client, stack.prefix, (queue,))
            check(final, "drain")
            if final.count(queue, "COMPLETED") + final.count(queue, "FAILED") + final.count(queue, "CANCELLED") \
                    >= len(requests) and not final.raw["inflight"]:
                drained = True
                break
            await asyncio.sleep(0.25)
        took = time.monotonic() - started
        print(f"{len(requests)} jobs through 2 gateways x 3 executors with 2 kills: drained={drained} "
              f"in {took:.1f}s; submits retried on the other gateway: {retried_elsewhere}")
        if not drained:
            problems.append(f"not drained within {DRAIN_SECONDS:.0f}s: {final.summary((queue,))}")

        # ---- no job lost, none made twice ------------------------------------------
        if len(ids) != len(requests):
            problems.append(f"{len(requests) - len(ids)} requests have no job")
        members = cast(list[bytes], await client.zrange(f"{stack.prefix}:q:{queue}:jobs", 0, -1))
        in_queue = {m.decode() for m in members}
        if in_queue != set(ids.values()):
            problems.append(f"the queue holds {len(in_queue)} jobs for {len(ids)} request ids: "
                            f"extra {sorted(in_queue - set(ids.values()))[:5]}, "
                            f"missing {sorted(set(ids.values()) - in_queue)[:5]}")
        store_client = connect(stack.redis_url)
        try:
            store = JobStore(store_client, stack.prefix, store_policy(Settings(key_prefix=stack.prefix)))
            jobs = {j.id: j for j in await store.get_many(list(ids.values())) if j is not None}
            not_done = {i: j.state.value for i, j in jobs.items() if j.state.value != "COMPLETED"}
            if not_done:
                problems.append(f"{len(not_done)} jobs did not complete: {dict(list(not_done.items())[:5])}")
            try:
                await assert_counters_match(store, queue)
            except AssertionError as err:
                problems.append(f"counters do not match the jobs' states: {err!r}")
        finally:
            await store_client.aclose()

        # ---- no job run twice beyond at-least-once --------------------------------------
        runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for line in run_log.read_text().splitlines():
            job_id, run_attempt, run_pid = line.split()
            runs[job_id].append((int(run_attempt), int(run_pid)))
        light_ids = {ids[r.request_id] for r in requests if r.request_id.startswith("rl-")}
        rerun = 0
        for job_id in light_ids:
            mine = sorted(runs.get(job_id, []))
            attempts = [a for a, _ in mine]
            if len(set(attempts)) != len(attempts):
                problems.append(f"job {job_id} ran twice in one attempt: {mine}")
            if not mine:
                problems.append(f"job {job_id} never ran")
                continue
            *earlier, (last_attempt, _) = mine
            if job_id in jobs and jobs[job_id].attempt != last_attempt:
                problems.append(f"job {job_id} is at attempt {jobs[job_id].attempt}, its last run was {last_attempt}")
            for attempt, pid in earlier:
                if pid not in killed_pids:
                    problems.append(f"job {job_id} ran again after attempt {attempt} on live worker {pid}: {mine}")
            rerun += bool(earlier)
        print(f"light jobs re-run after the executor kill: {rerun}; runs logged: {sum(map(len, runs.values()))}")

        # ---- the browser-less executor ran no browser job ----------------------------
        browser_ids = {ids[r.request_id] for r in requests if r.request_id.startswith("br-")}
        if started_job_ids(light) & browser_ids:
            problems.append(f"the browser-less executor ran browser jobs {started_job_ids(light) & browser_ids}")
        if not started_job_ids(light) & light_ids:
            problems.append("the browser-less executor ran no job at all")
    finally:
        await client.aclose()
        for ch in channels:
            await ch.close()
    assert not problems, "\n".join(problems[:10])
