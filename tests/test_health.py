"""Health and the error interceptor: every handler shape passes the interceptor
(ours and grpc's, over the real gateway), undecodable requests are INVALID_ARGUMENT,
errors stay small whatever input they echo, readiness follows the store (hung or
restarted), and SIGTERM turns health NOT_SERVING before the gateway's streams close."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as GrpcHealthServicer
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.artifacts import LocalArtifactStore
from conveyor.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from conveyor.v1 import job_service_pb2, queue_service_pb2, schedule_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from gateway.errors import MAX_STATUS_BYTES, ErrorInterceptor, to_status
from gateway.interceptors import WrappingServer
from gateway.server import SERVICE_NAMES
from tests.support.grpc_helpers import TERMINAL, error_info, field_violations, submit_request, unique_queue, watch_all
from tests.support.processes import Process, Stack, stack_env, start_redis, wait_for

HCR = health_pb2.HealthCheckResponse
pb, qpb = job_service_pb2, queue_service_pb2
#: Readiness must turn within this of the store stopping or coming back (it pings
#: every second with a one-second timeout).
TURN_S = 5.0


def status_trailer(err: grpc.aio.AioRpcError) -> bytes:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return value
    raise AssertionError(f"no grpc-status-details-bin on {err.code()}: {err.details()}")


def check(target: str, service: str = "") -> int:
    """Health/Check over a fresh channel; -1 if the call fails."""
    with grpc.insecure_channel(target) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            return int(reply.status)
        except grpc.RpcError:
            return -1


def all_report(target: str, status: int) -> bool:
    return all(check(target, name) == status for name in ("", *SERVICE_NAMES))


class HealthWatch:
    """A Health/Watch stream read in the background; `wait_for(status)` waits until it
    has sent `status` (after the statuses seen so far)."""

    def __init__(self, channel: grpc.aio.Channel, service: str = "") -> None:
        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        self.seen: list[int] = []
        self.ended: grpc.StatusCode | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                self.seen.append(msg.status)
                self._changed.set()
            self.ended = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            self.ended = err.code()
        except asyncio.CancelledError:
            if not self.call.cancelled():
                raise
            self.ended = grpc.StatusCode.CANCELLED  # cancelled by close()
        self._changed.set()

    async def wait_for(self, status: int, timeout: float, after: int = 0) -> int:
        """Waits until a status equal to `status` is seen at index >= `after`; returns its index."""

        async def seen() -> int:
            while True:
                for i in range(after, len(self.seen)):
                    if self.seen[i] == status:
                        return i
                assert self.ended is None, f"the watch ended {self.ended} after {self.seen}"
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), timeout)

    async def close(self) -> None:
        self.call.cancel()
        await self.task


# ---- to_status: bounded whatever the error carries ------------------------------------


def test_to_status_caps_a_huge_invalid_argument() -> None:
    huge = "\U0001f600" * 250_000  # 1 MB of 4-byte characters
    field = f"labels[{huge}]"
    exc = InvalidArgument([FieldViolation(field, huge) for _ in range(1000)], message=huge)
    exc.metadata = {f"{huge}{i}": huge for i in range(20)} | {f"k{i}": huge for i in range(1000)}
    status = to_status(exc)
    data = status.SerializeToString()
    assert len(data) < MAX_STATUS_BYTES
    assert status.code == code_pb2.INVALID_ARGUMENT and status.message.endswith("…")
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert info.reason == "FIELD_INVALID" and 0 < len(info.metadata) < 1000
    assert all(len(k.encode()) <= 64 and len(v.encode()) <= 300 for k, v in info.metadata.items())
    listed, last = bad.field_violations[:-1], bad.field_violations[-1]
    assert 0 < len(listed) <= 20
    assert all(v.field.startswith("labels[\U0001f600") and v.field.endswith("…") for v in listed)
    assert all(len(v.description.encode()) <= 300 for v in listed)
    assert last.description == f"{1000 - len(listed)} more violations not listed"
    # Read back as a client would: valid UTF-8 everywhere (no character cut in two).
    assert status_pb2.Status.FromString(data) == status


def test_to_status_keeps_ordinary_errors_intact() -> None:
    exc = InvalidArgument([FieldViolation("queue", "a queue name is required"), FieldViolation("priority", "unknown")])
    status = to_status(exc)
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("queue", "a queue name is required"), ("priority", "unknown")]
    assert status.message == "queue: a queue name is required; priority: unknown"
    # Text that is not valid UTF-8 (a lone surrogate, as from undecodable bytes) still makes a status.
    odd = to_status(NotFound("no job 'a\udc80b'", metadata={"job_id": "a\udc80b"}))
    assert status_pb2.Status.FromString(odd.SerializeToString()).message == "no job 'a?b'"
    busy = to_status(ResourceExhausted("x" * 100_000, retry_after_seconds=2))
    assert len(busy.SerializeToString()) < MAX_STATUS_BYTES
    retry = error_details_pb2.RetryInfo()
    assert busy.details[-1].Unpack(retry) and retry.retry_delay.seconds == 2


# ---- the interceptor around grpc's own handlers, in process -------------------------


@pytest.fixture(params=["interceptor", "registration"])
async def bare_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[grpc.aio.Channel, GrpcHealthServicer]]:
    """An in-process grpc.aio server with only the error mapping, grpc's own async
    HealthServicer and a client-streaming method (summing HealthCheckRequest.service
    lengths), on loopback. The mapping as a grpc.aio interceptor, and as the gateway
    applies it: each handler wrapped where it is registered (WrappingServer), grpc's
    generated ones by name, the test's own through generic handlers."""
    if request.param == "interceptor":
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    else:
        server = WrappingServer(grpc.aio.server(), [ErrorInterceptor()])
    health = GrpcHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

    async def total(requests: AsyncIterator[health_pb2.HealthCheckRequest], context: Any) -> Any:
        n = 0
        async for r in requests:
            n += len(r.service)
        return HCR(status=HCR.SERVING if n == 6 else HCR.NOT_SERVING)

    async def refuse(request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        text = request.service
        if not text.startswith("invalid"):
            raise NotFound(f"no {text!r}", metadata={"input": text, text: text})
        exc = InvalidArgument([FieldViolation(f"labels[{text!r}]", f"bad {text!r}") for _ in range(100)])
        exc.metadata = {"input": text}
        raise exc

    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("test.Sum", {
            "Total": grpc.stream_unary_rpc_method_handler(
                total, health_pb2.HealthCheckRequest.FromString, HCR.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("test.Echo", {
            "Refuse": grpc.unary_unary_rpc_method_handler(
                refuse, health_pb2.HealthCheckRequest.FromString, HCR.SerializeToString),
        }),
    ])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch, health
    await server.stop(0)


async def test_grpcs_coroutine_watch_and_unimplemented_list_pass_the_interceptor(
    bare_server: tuple[grpc.aio.Channel, GrpcHealthServicer],
) -> None:
    ch, health = bare_server
    watch = HealthWatch(ch)
    try:
        await watch.wait_for(HCR.SERVING, 10)
        await health.set("", HCR.NOT_SERVING)
        await watch.wait_for(HCR.NOT_SERVING, 10)
    finally:
        await watch.close()
    # grpc's async servicer has no List: its base class raises NotImplementedError.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health_pb2_grpc.HealthStub(ch).List(health_pb2.HealthListRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(err.value).reason == "METHOD_NOT_IMPLEMENTED"


async def test_a_client_streaming_method_passes_the_interceptor(
    bare_server: tuple[grpc.aio.Channel, GrpcHealthServicer],
) -> None:
    ch, _ = bare_server
    total = ch.stream_unary("/test.Sum/Total", request_serializer=None, response_deserializer=HCR.FromString)
    parts = [health_pb2.HealthCheckRequest(service=s).SerializeToString() for s in ("ab", "cd", "ef")]
    assert (await total(iter(parts), timeout=10)).status == HCR.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await total(iter([parts[0], b"\xff\xff\xff"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "MALFORMED_REQUEST"


async def test_a_method_nobody_serves_is_unimplemented(
    bare_server: tuple[grpc.aio.Channel, GrpcHealthServicer],
) -> None:
    """WrappingServer serves methods registered by name from its own table, ahead of
    the generic handlers: a name in neither is grpc's own UNIMPLEMENTED, and a real
    method of a registered service beside it still answers."""
    ch, _ = bare_server
    for name in ("/grpc.health.v1.Health/Nope", "/no.such.Service/Check"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(name)(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
    check = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert check.status == HCR.SERVING


# ---- every stream method of the real gateway ------------------------------------------


async def test_every_stream_method_of_the_gateway_works(stack: Stack, channel: grpc.aio.Channel) -> None:
    jobs, queues = JobServiceStub(channel), QueueServiceStub(channel)
    q = unique_queue("health")
    sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))

    # JobService.WatchJob: snapshot to terminal event, ending OK.
    msgs = await watch_all(jobs, sub.id, after_sequence=0)
    assert msgs[0].job.id == sub.id and msgs[-1].event.state in TERMINAL

    # QueueService.WatchQueue: the queue's events, replayed from the start.
    watch_queue = queues.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=0))
    first = await asyncio.wait_for(watch_queue.read(), 10)
    assert first.event.job_id == sub.id
    watch_queue.cancel()

    # JobService.GetArtifact: a file in the gateway's artifact store, in chunks.
    data = os.urandom(150_000)
    await LocalArtifactStore(Path(stack.env["CONVEYOR_DATA_DIR"]) / "artifacts").put(
        sub.id, "shot.png", data, "image/png")
    chunks = [c async for c in jobs.GetArtifact(pb.GetArtifactRequest(job_id=sub.id, name="shot.png"), timeout=10)]
    assert len(chunks) > 1 and b"".join(c.data for c in chunks) == data
    assert chunks[0].content_type == "image/png" and chunks[0].size_bytes == len(data)

    # grpc.health.v1.Health/Watch: SERVING, and the stream stays open.
    watch = HealthWatch(channel)
    try:
        await watch.wait_for(HCR.SERVING, 10)
        # A round trip on the same channel, after which the watch is still open.
        assert (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)).status \
            == HCR.SERVING
        assert watch.ended is None and not watch.call.done()
    finally:
        await watch.close()
    assert watch.ended == grpc.StatusCode.CANCELLED  # ended by us, not by the server

    # grpc.reflection.v1alpha ServerReflectionInfo (stream-stream): list_services.
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = [a async for a in reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {*SERVICE_NAMES, "grpc.health.v1.Health"} <= names


async def test_health_list_and_check(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    listed = await health.List(health_pb2.HealthListRequest(), timeout=10)
    assert {name: r.status for name, r in listed.statuses.items()} == dict.fromkeys(("", *SERVICE_NAMES), HCR.SERVING)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ---- undecodable requests ---------------------------------------------------------------


async def test_undecodable_request_bytes_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    garbage = b"\xff\xff\xff"
    submit = channel.unary_unary("/conveyor.v1.JobService/SubmitJob", request_serializer=None,
                                 response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(garbage, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "conveyor.v1.SubmitJobRequest" in (err.value.details() or "")
    assert error_info(err.value).reason == "MALFORMED_REQUEST"
    assert list(field_violations(err.value)) == ["request"]

    watch = channel.unary_stream("/conveyor.v1.JobService/WatchJob", request_serializer=None,
                                 response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in watch(garbage, timeout=10):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "MALFORMED_REQUEST"

    # A well-formed request still gets its usual answer.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(pb.SubmitJobRequest().SerializeToString(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason != "MALFORMED_REQUEST"


# ---- errors built from huge input ---------------------------------------------------------


async def test_errors_built_from_huge_input_stay_small(channel: grpc.aio.Channel) -> None:
    """Whatever validation makes of huge input (it may bound it itself), the
    gateway's answer is a small, ordinary refusal."""
    big = "x" * 100_000
    jobs, schedules = JobServiceStub(channel), ScheduleServiceStub(channel)
    refused = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    calls: list[Callable[[], Any]] = [
        lambda: jobs.GetJob(pb.GetJobRequest(id=big), timeout=10),
        lambda: schedules.GetSchedule(schedule_service_pb2.GetScheduleRequest(id=big), timeout=10),
        lambda: jobs.SubmitJob(submit_request({"noop": {}, "labels": {"k" * 1_000_000: "v"}}), timeout=10),
        lambda: jobs.SubmitJob(submit_request({"noop": {}, "labels": {f"{i}{big}": "v" for i in range(5)}}),
                               timeout=10),
        lambda: jobs.SubmitJob(submit_request({"browser": {"steps": [{"navigate": {"url": f"ftp://{big}"}}] * 50}}),
                               timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() in refused, (err.value.code(), err.value.details())
        assert len(status_trailer(err.value)) < MAX_STATUS_BYTES
        assert len(err.value.details() or "") < 1000


async def test_an_error_echoing_huge_input_reaches_the_client_small(
    bare_server: tuple[grpc.aio.Channel, GrpcHealthServicer],
) -> None:
    """Through real gRPC, errors whose every text echoes a 1 MB input (as a
    validation or a store error could) arrive whole, code and details, under 8 KiB."""
    ch, _ = bare_server
    refuse = ch.unary_unary("/test.Echo/Refuse", request_serializer=None, response_deserializer=None)
    for kind, code in (("invalid", grpc.StatusCode.INVALID_ARGUMENT), ("missing", grpc.StatusCode.NOT_FOUND)):
        request = health_pb2.HealthCheckRequest(service=kind + "x" * 1_000_000).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await refuse(request, timeout=10)
        assert err.value.code() == code, err.value.details()
        assert len(status_trailer(err.value)) < MAX_STATUS_BYTES
        info = error_info(err.value)
        assert info.metadata["input"].startswith(kind) and info.metadata["input"].endswith("…")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            bad = error_details_pb2.BadRequest()
            assert status_pb2.Status.FromString(status_trailer(err.value)).details[1].Unpack(bad)
            assert len(bad.field_violations) == 17  # 16 listed, then how many more
            assert bad.field_violations[-1].description == "84 more violations not listed"


# ---- readiness follows the store ------------------------------------------------------------


def redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


async def test_readiness_follows_a_hung_store(tmp_path: Path) -> None:
    redis_proc, url = start_redis(tmp_path / "redis")
    s = Stack(url, stack_env(url, tmp_path / "data"), tmp_path / "logs")
    try:
        s.start_gateway()
        async with grpc.aio.insecure_channel(s.grpc_target) as ch:
            watch = HealthWatch(ch, SERVICE_NAMES[0])
            at = await watch.wait_for(HCR.SERVING, 10)
            try:
                os.kill(redis_proc.pid, signal.SIGSTOP)
                at = await watch.wait_for(HCR.NOT_SERVING, TURN_S, after=at)
                wait_for(lambda: all_report(s.grpc_target, HCR.NOT_SERVING), TURN_S, "every service NOT_SERVING")
            finally:
                os.kill(redis_proc.pid, signal.SIGCONT)
            await watch.wait_for(HCR.SERVING, TURN_S, after=at)
            wait_for(lambda: all_report(s.grpc_target, HCR.SERVING), TURN_S, "every service SERVING again")
            await watch.close()
    finally:
        s.stop()
        s.print_problems()
        redis_proc.stop()


async def test_readiness_follows_a_restarted_store(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis_proc, url = start_redis(redis_dir)
    s = Stack(url, stack_env(url, tmp_path / "data"), tmp_path / "logs")
    try:
        s.start_gateway()
        assert all_report(s.grpc_target, HCR.SERVING)
        redis_proc.kill()
        wait_for(lambda: all_report(s.grpc_target, HCR.NOT_SERVING), TURN_S, "every service NOT_SERVING")
        redis_proc, _ = start_redis(redis_dir, port=redis_port(url))
        wait_for(lambda: all_report(s.grpc_target, HCR.SERVING), TURN_S, "every service SERVING again")
        assert s.gateway is not None and s.gateway.alive()
    finally:
        s.stop()
        s.print_problems()
        redis_proc.stop()


# ---- SIGTERM: health first, then the streams ---------------------------------------------------


async def test_sigterm_turns_health_not_serving_before_streams_close(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    gw: Process = s.start_gateway()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs, queues = JobServiceStub(ch), QueueServiceStub(ch)
        q = unique_queue("drain")
        sub = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))  # no executor: it waits
        order: list[str] = []

        async def follow(name: str, call: Any) -> grpc.StatusCode:
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as err:
                order.append(name)
                return err.code()
            order.append(name)
            return grpc.StatusCode.OK

        job_call = jobs.WatchJob(pb.WatchJobRequest(id=sub.id))
        queue_call = queues.WatchQueue(qpb.WatchQueueRequest(queue=q, after_sequence=0))
        assert (await asyncio.wait_for(job_call.read(), 10)).job.id == sub.id
        assert (await asyncio.wait_for(queue_call.read(), 10)).event.job_id == sub.id
        watch = HealthWatch(ch)
        at = await watch.wait_for(HCR.SERVING, 10)
        ends = [asyncio.create_task(follow("job", job_call)), asyncio.create_task(follow("queue", queue_call))]

        async def health_turned() -> None:
            await watch.wait_for(HCR.NOT_SERVING, 15, after=at)
            order.append("health")

        turned = asyncio.create_task(health_turned())
        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(*ends), 15)
        await asyncio.wait_for(turned, 15)
        assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
        assert order[0] == "health", order
        await asyncio.wait_for(watch.task, 15)
        assert watch.ended == grpc.StatusCode.UNAVAILABLE
    assert gw.proc.wait(15) == 0
    # Nothing held the shutdown up for its grace period (5 s): every stream ended.
    assert time.monotonic() - started < 4.0
    assert "gateway stopped" in gw.log()
