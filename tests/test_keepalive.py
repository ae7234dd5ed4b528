"""Keepalive both ways, on a real gateway and executor: a path that goes silent under
a stream (no RST, no FIN: a host gone, a NAT or load balancer that forgot the
connection; tests/support/cuttable_proxy.py freezes one) is found out by pings. The
Python SDK's watch then resumes on a new connection, nothing missed; the gateway
drops a client it can no longer reach, ending its streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, task_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor_client import AsyncConveyorClient
from tests.support.cuttable_proxy import cuttable_proxy
from tests.support.grpc_helpers import unique_queue
from tests.support.processes import Stack, free_port, wait_for
from tests.test_metrics import scrape, value

pb, qpb = job_service_pb2, queue_service_pb2
WATCH = "conveyor.v1.JobService/WatchJob"


async def test_the_sdks_watch_finds_a_silent_path_by_its_pings_and_resumes(make_stack: Callable[..., Stack]) -> None:
    # Heartbeats far apart: nothing but the client's own pings can find the path dead.
    s = make_stack(CONVEYOR_WATCH_HEARTBEAT_SECONDS="60")
    s.start_gateway()
    s.start_executor()
    q = unique_queue()
    with cuttable_proxy(s.grpc_target) as proxy:
        # The SDK's keepalive, shortened from its 30 s + 10 s so the test is quick.
        options = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 1000),
                   ("grpc.http2.ping_timeout_ms", 1000)]
        async with (AsyncConveyorClient(s.grpc_target) as direct,
                    AsyncConveyorClient(proxy.address, options=options) as client):
            await direct.pause_queue(q)
            submitted = await direct.submit({"queue": q, "noop": {}})
            snapshots: list[job_pb2.Job] = []
            events: list[job_pb2.JobEvent] = []
            started = time.monotonic()
            async with asyncio.timeout(30):
                async for message in client.watch(submitted.id):
                    if message.WhichOneof("kind") == "job":
                        snapshots.append(message.job)
                        if len(snapshots) == 1:
                            assert message.job.state == job_pb2.JOB_STATE_WAITING
                            proxy.freeze()
                            await direct.resume_queue(q)
                    elif message.WhichOneof("kind") == "event":
                        events.append(message.event)
            took = time.monotonic() - started
    assert len(snapshots) == 2, "a fresh snapshot on the new connection"
    assert proxy.accepted == 2, "the watch went on over a new connection"
    sequences = [e.sequence for e in events]
    assert sequences == list(range(snapshots[0].last_sequence + 1, snapshots[0].last_sequence + 1 + len(events)))
    assert events[-1].state == job_pb2.JOB_STATE_COMPLETED
    assert took < 15, f"found out by pings within seconds, not by the 60 s heartbeat ({took:.1f} s)"


async def test_the_gateway_drops_a_client_it_can_no_longer_reach(make_stack: Callable[..., Stack]) -> None:
    port = free_port()
    s = make_stack(CONVEYOR_GRPC_KEEPALIVE_SECONDS="1", CONVEYOR_WATCH_HEARTBEAT_SECONDS="60",
                   CONVEYOR_GATEWAY_METRICS_ADDR=f"127.0.0.1:{port}", CONVEYOR_METRICS_CACHE_SECONDS="0")
    s.start_gateway()
    with cuttable_proxy(s.grpc_target) as proxy:
        async with (grpc.aio.insecure_channel(s.grpc_target) as direct,
                    grpc.aio.insecure_channel(proxy.address) as silent):  # a client without keepalive
            q = unique_queue()
            await QueueServiceStub(direct).PauseQueue(qpb.PauseQueueRequest(queue=q))
            job_id = (await JobServiceStub(direct).SubmitJob(pb.SubmitJobRequest(queue=q, noop=task_pb2.NoopTask()))).id
            watch = JobServiceStub(silent).WatchJob(pb.WatchJobRequest(id=job_id))
            assert (await asyncio.wait_for(watch.read(), 30)).WhichOneof("kind") == "job"
            proxy.freeze()
            started = time.monotonic()
            wait_for(lambda: value(scrape(port), "conveyor_grpc_server_handled_total", method=WATCH,
                                   code="CANCELLED") == 1, 20, "the gateway to end the unreachable client's stream")
            took = time.monotonic() - started
            watch.cancel()
    assert took < 10, f"a ping unanswered within its 1 s ends it ({took:.1f} s)"
