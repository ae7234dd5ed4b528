"""Builds and runs one gateway process: grpc.aio server with the Conveyor services,
health and reflection, the shared event reader and the admission loop."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor import tracing
from conveyor.artifacts import open_artifact_store
from conveyor.net import is_loopback
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore, connect
from conveyor.store.key_store import KeyStore
from conveyor.store.schedule_store import ScheduleStore
from conveyor.store.session_store import SessionStore
from conveyor.store.suite_store import SuiteStore
from conveyor.transport import store_policy
from conveyor.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    suite_service_pb2,
    suite_service_pb2_grpc,
)
from gateway import reflection
from gateway.admission import Admission
from gateway.auth import Authenticator
from gateway.dashboard.app import Dashboard
from gateway.errors import ErrorInterceptor
from gateway.event_hub import EventHub
from gateway.health import Health, Readiness
from gateway.interceptors import WrappingServer
from gateway.janitor import Janitor
from gateway.kind_catalog import KindCatalog
from gateway.metrics import GatewayMetrics
from gateway.runtime import GatewayRuntime
from gateway.schedules import ScheduleFiring
from gateway.servicers.jobs import JobServicer
from gateway.servicers.keys import KeyServicer
from gateway.servicers.queues import QueueServicer
from gateway.servicers.schedules import ScheduleServicer
from gateway.servicers.sessions import SessionServicer
from gateway.servicers.suites import SuiteServicer
from gateway.submit_tracing import SubmitTracing
from gateway.validation import Limits

log = structlog.get_logger("gateway")

SERVICE_NAMES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    suite_service_pb2.DESCRIPTOR.services_by_name["SuiteService"].full_name,
)


class InsecureBinding(RuntimeError):
    """A gateway reachable beyond this machine without auth, and not told that is meant."""


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RuntimeError(f"{setting}={path}: cannot read: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise RuntimeError(f"{setting}={path}: not a PEM file")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port when CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE are
    set (None: plaintext); with CONVEYOR_TLS_CLIENT_CA_FILE, clients must present a
    certificate signed by that CA (mTLS). A pair that does not match, or a file that
    cannot be read, stops the gateway here with the setting named, not at the first
    handshake."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    cert = _read_pem(settings.tls_cert_file, "CONVEYOR_TLS_CERT_FILE")
    key = _read_pem(settings.tls_key_file, "CONVEYOR_TLS_KEY_FILE")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert_file, settings.tls_key_file
        )
    except ssl.SSLError as err:
        raise RuntimeError(
            f"CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE are not a certificate and its key: {err}"
        ) from None
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = _read_pem(settings.tls_client_ca_file, "CONVEYOR_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


#: Calls arrived but not yet taken by the aio server's Python loop (it takes them one
#: at a time): grpc core's defaults (soft 1,000, hard 3,000) cancel the rest of a
#: burst of new streams (thousands of watchers connecting at once) as CANCELLED.
MAX_PENDING_CALLS = 50_000
#: The bound of a gateway process's pool of Redis connections (beside it: the store
#: scripts' one shared connection, the event reader's, the readiness ping's).
REDIS_POOL_CONNECTIONS = 64
#: The most often a client may ping (keepalive) a connection on which the gateway sent
#: nothing since its last ping; past that grpc answers GOAWAY "too_many_pings". The
#: Conveyor SDKs ping after 30 s of quiet; 5 s leaves room for other clients' settings.
CLIENT_PING_MIN_SECONDS = 5.0
#: The longest the gateway waits for the answer to its own keepalive ping.
KEEPALIVE_TIMEOUT_SECONDS = 20.0


def keepalive_options(seconds: float) -> list[tuple[str, int]]:
    """grpc's keepalive both ways: the gateway pings a connection after `seconds` of
    quiet (calls open or not) and drops it when the ping goes unanswered; clients may
    ping it as often as every CLIENT_PING_MIN_SECONDS, calls open or not."""
    answer_ms = int(min(seconds, KEEPALIVE_TIMEOUT_SECONDS) * 1000)
    return [
        ("grpc.keepalive_time_ms", int(seconds * 1000)),
        ("grpc.keepalive_timeout_ms", answer_ms),
        # A ping in flight (grpc's bandwidth probe) stands for the keepalive one: the
        # same wait for its answer (60 s unless set).
        ("grpc.http2.ping_timeout_ms", answer_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(CLIENT_PING_MIN_SECONDS * 1000)),
    ]


class Gateway:
    def __init__(self, settings: Settings, process_index: int | None = None) -> None:
        """`process_index`: this process's place among CONVEYOR_GATEWAY_PROCESSES
        (None: the only one); it names its Redis connections (`conveyor-gateway.<i>`)."""
        self.settings = settings
        self.process_index = process_index
        url = settings.effective_redis_url
        suffix = "" if process_index is None else f".{process_index}"
        self.client = connect(url, max_connections=REDIS_POOL_CONNECTIONS, client_name="conveyor-gateway" + suffix)
        self.store = JobStore(self.client, settings.key_prefix, store_policy(settings))
        # The one blocking reader of the event stream: one connection, whatever the watchers.
        self.hub = EventHub(self.store, connect(url, max_connections=1,
                                                   client_name="conveyor-gateway-events" + suffix))
        self.admission = Admission(self.store)
        self.schedules = ScheduleStore(self.client, settings.key_prefix)
        self.firing = ScheduleFiring(self.schedules, self.admission.wake)
        self.health = Health()
        self.keys = KeyStore(self.client, settings.key_prefix)
        self.authenticator = Authenticator(self.keys if settings.auth == "on" else None, admin_key=settings.admin_key)
        # Readiness pings on a connection of its own: a pool busy or hung cannot hold it up.
        self.readiness = Readiness(
            self.health, connect(url, max_connections=1, client_name="conveyor-gateway-health" + suffix),
            SERVICE_NAMES,
        )
        artifacts = self.artifacts = open_artifact_store(settings)  # a directory, or S3
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
        # Prometheus metrics (CONVEYOR_GATEWAY_METRICS_ADDR): their interceptor goes outermost.
        self.metrics = GatewayMetrics(settings, self.store) if settings.gateway_metrics_addr else None
        metered = [self.metrics.interceptor] if self.metrics is not None else []
        # Traces (CONVEYOR_TRACING=on): the submit span, outside the error interceptor too.
        traced = [SubmitTracing()] if tracing.setup(settings, "conveyor-gateway") else []
        # Every handler is wrapped as it is registered (gateway/interceptors.py): metrics
        # outermost, then the submit span, then the error mapping with the caller's checks.
        self.server = WrappingServer(grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # Several processes of one gateway share its port; otherwise a port taken is an error.
                ("grpc.so_reuseport", 1 if settings.gateway_processes > 1 else 0),
                ("grpc.max_concurrent_streams", 100_000),
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
                *keepalive_options(settings.grpc_keepalive_seconds),
            ],
        ), [*metered, *traced, ErrorInterceptor(guard=self.authenticator)])
        # The servicers, served over gRPC and called in-process by the dashboard (one copy of the rules).
        jobs, queues = JobServicer(self.runtime), QueueServicer(self.runtime)
        schedules = ScheduleServicer(self.runtime, self.schedules, self.firing)
        keys = KeyServicer(self.keys)
        job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, self.server)
        queue_service_pb2_grpc.add_QueueServiceServicer_to_server(queues, self.server)
        schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(schedules, self.server)
        key_service_pb2_grpc.add_KeyServiceServicer_to_server(keys, self.server)
        session_service_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(SessionStore(self.client, settings.key_prefix)), self.server)
        suite_service_pb2_grpc.add_SuiteServiceServicer_to_server(SuiteServicer(self.runtime, SuiteStore(
            self.client, settings.key_prefix, keep_ms=int(settings.keep_max_age_seconds * 1000))), self.server)
        self.dashboard = Dashboard(settings, self.authenticator, {
            "JobService": jobs, "QueueService": queues, "ScheduleService": schedules, "KeyService": keys})
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Reflection serves the contract with its comments (conveyor/v1/descriptor_set.binpb).
        reflection.enable_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0

    def check_binding(self) -> None:
        s = self.settings
        if s.auth == "off" and not is_loopback(s.grpc_addr) and not s.insecure:
            raise InsecureBinding(
                f"refusing to serve {s.grpc_addr} without auth: anyone who reaches it could read and change every "
                "job. Keep CONVEYOR_AUTH=on (the default) with API keys, bind to loopback, or set "
                "CONVEYOR_INSECURE=true if that is what you want."
            )
        self.dashboard.check_binding()

    async def start(self) -> None:
        self.check_binding()
        await self.client.ping()
        await self.store.load_scripts()
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(self.settings.grpc_addr)
        else:
            self.port = self.server.add_secure_port(self.settings.grpc_addr, credentials)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.grpc_addr}")
        await self.hub.start()
        await self.admission.start()
        await self.janitor.start()
        await self.firing.start()
        self.readiness.update(True)  # the store answered above; the loop follows it from here
        await self.server.start()
        await self.readiness.start()
        await self.dashboard.start()
        if self.metrics is not None:
            await self.metrics.start()
        log.info("gateway serving", addr=self.settings.grpc_addr, port=self.port, tls=credentials is not None,
                 client_certificates=self.settings.tls_client_ca_file is not None, auth=self.settings.auth)
        if self.authenticator.enabled and not self.settings.admin_key and not await self.keys.list_keys():
            log.warning("auth is on and there is no API key yet: set CONVEYOR_ADMIN_KEY to bootstrap one")

    async def stop(self) -> None:
        """Graceful and bounded: health turns NOT_SERVING, and every health watcher is
        told so (up to DRAIN_TIMEOUT_SECONDS), before anything closes; then watch
        streams end with UNAVAILABLE, health watches too, and in-flight unary calls
        finish (up to the grace period)."""
        log.info("gateway stopping")
        await self.dashboard.stop()
        if self.metrics is not None:
            await self.metrics.close()
        await self.health.drain()
        await self.readiness.close()
        await self.firing.close()
        await self.admission.close()
        await self.janitor.close()
        await self.hub.close()
        self.health.close()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.artifacts.close()
        await self.readiness.client.aclose()
        await self.client.aclose()
        await tracing.shutdown()
        log.info("gateway stopped")


async def serve(settings: Settings, process_index: int | None = None) -> None:
    gateway = Gateway(settings, process_index)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    await stop.wait()
    await gateway.stop()
