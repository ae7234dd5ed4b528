"""Builds and runs one gateway process: grpc.aio server with the Conveyor services,
health and reflection, the shared event reader and the admission loop."""

from __future__ import annotations

import asyncio
import signal

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conveyor.artifacts import LocalArtifactStore
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.store.schedule_store import ScheduleStore
from conveyor.transport import store_policy
from conveyor.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from gateway.admission import Admission
from gateway.errors import ErrorInterceptor
from gateway.event_hub import EventHub
from gateway.health import Health, Readiness
from gateway.janitor import Janitor
from gateway.kind_catalog import KindCatalog
from gateway.runtime import GatewayRuntime
from gateway.schedules import ScheduleFiring
from gateway.servicers.jobs import JobServicer
from gateway.servicers.queues import QueueServicer
from gateway.servicers.schedules import ScheduleServicer
from gateway.validation import Limits

log = structlog.get_logger("gateway")

SERVICE_NAMES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.effective_redis_url
        self.client = connect(url, max_connections=64, client_name="conveyor-gateway")
        self.store = JobStore(self.client, settings.key_prefix, store_policy(settings))
        # The one blocking reader of the event stream: one connection, whatever the watchers.
        self.hub = EventHub(self.store, connect(url, max_connections=1, client_name="conveyor-gateway-events"))
        self.admission = Admission(self.store)
        self.schedules = ScheduleStore(self.client, settings.key_prefix)
        self.firing = ScheduleFiring(self.schedules, self.admission.wake)
        self.health = Health()
        # Readiness pings on a connection of its own: a pool busy or hung cannot hold it up.
        self.readiness = Readiness(
            self.health, connect(url, max_connections=1, client_name="conveyor-gateway-health"), SERVICE_NAMES
        )
        artifacts = LocalArtifactStore(settings.artifact_root)
        self.janitor = Janitor(self.store, artifacts)
        self.runtime = GatewayRuntime(
            settings=settings,
            store=self.store,
            hub=self.hub,
            admission=self.admission,
            artifacts=artifacts,
            janitor=self.janitor,
            kinds=KindCatalog(self.store),
            limits=Limits(
                max_steps=settings.max_steps,
                max_file_bytes=settings.max_file_bytes,
                max_request_bytes=settings.max_request_bytes,
                max_job_timeout_ms=int(settings.max_job_timeout_seconds * 1000),
            ),
        )
        # Requests a little over the limit still arrive, so validation can name the field.
        max_message = settings.max_request_bytes * 2 + 1024 * 1024
        self.server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", 100_000),
            ],
        )
        job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(self.runtime), self.server)
        queue_service_pb2_grpc.add_QueueServiceServicer_to_server(QueueServicer(self.runtime), self.server)
        schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(
            ScheduleServicer(self.runtime, self.schedules, self.firing), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0

    async def start(self) -> None:
        await self.client.ping()
        self.port = self.server.add_insecure_port(self.settings.grpc_addr)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.grpc_addr}")
        await self.hub.start()
        await self.admission.start()
        await self.janitor.start()
        await self.firing.start()
        self.readiness.update(True)  # the store answered above; the loop follows it from here
        await self.server.start()
        await self.readiness.start()
        log.info("gateway serving", addr=self.settings.grpc_addr, port=self.port)

    async def stop(self) -> None:
        """Graceful and bounded: health turns NOT_SERVING, and every health watcher is
        told so (up to DRAIN_TIMEOUT_SECONDS), before anything closes; then watch
        streams end with UNAVAILABLE, health watches too, and in-flight unary calls
        finish (up to the grace period)."""
        log.info("gateway stopping")
        await self.health.drain()
        await self.readiness.close()
        await self.firing.close()
        await self.admission.close()
        await self.janitor.close()
        await self.hub.close()
        self.health.close()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.readiness.client.aclose()
        await self.client.aclose()
        log.info("gateway stopped")


async def serve(settings: Settings) -> None:
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    await stop.wait()
    await gateway.stop()
