"""`grpc.health.v1.Health` for the gateway, and the readiness loop that drives it.

Readiness follows the store: `Readiness` pings Redis every `PING_INTERVAL_SECONDS`
on a connection of its own (a pool exhausted or hung by requests cannot hold it up),
and a ping that fails or takes longer than `PING_TIMEOUT_SECONDS` turns every
service NOT_SERVING until one answers again.

At shutdown `Health.drain` turns everything NOT_SERVING for good and waits (bounded)
until every open Watch has been sent that, so that load balancers hear of it before
the gateway's streams close; `Health.close` then ends those Watch streams too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import redis.asyncio as aioredis
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import RedisError

from conveyor.errors import NotFound, Unavailable
from gateway.background import BackgroundLoop

log = structlog.get_logger("gateway.health")

PING_INTERVAL_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 1.0
#: How long shutdown waits for health watchers to be sent NOT_SERVING.
DRAIN_TIMEOUT_SECONDS = 2.0
#: How long NOT_SERVING stands, once sent, before the gateway's streams close.
DRAIN_HOLD_SECONDS = 0.3

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check, Watch and List over one table of statuses ("" is the server's own)."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._changed = asyncio.Event()  # set, and replaced, on every change
        self._sent: dict[object, tuple[str, int | None]] = {}  # per open Watch: service, status last sent
        self._progress = asyncio.Event()  # set whenever a Watch sent something or ended
        self._draining = False
        self._closed = False

    def status(self, service: str) -> int | None:
        return self._statuses.get(service)

    def set(self, services: Iterable[str], status: int) -> None:
        """Sets the status of `services`; ignored once draining."""
        if not self._draining:
            self._publish(dict.fromkeys(services, status))

    def _publish(self, updates: dict[str, int]) -> None:
        if all(self._statuses.get(name) == status for name, status in updates.items()):
            return
        self._statuses.update(updates)
        self._changed.set()
        self._changed = asyncio.Event()

    def _caught_up(self) -> bool:
        return all(self._statuses.get(name, SERVICE_UNKNOWN) == sent for name, sent in self._sent.values())

    async def drain(self, timeout: float = DRAIN_TIMEOUT_SECONDS) -> bool:
        """NOT_SERVING for good; returns once every open Watch was sent that (True),
        or after `timeout` (False)."""
        self._draining = True
        self._publish(dict.fromkeys(self._statuses, NOT_SERVING))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._caught_up():
            self._progress.clear()
            left = deadline - loop.time()
            if left <= 0:
                log.warning("health watchers not told NOT_SERVING in time", watchers=len(self._sent))
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                continue
        # Sent is not yet read: a moment for watchers (and load balancers polling
        # Check) to act on NOT_SERVING before the streams they route start closing.
        await asyncio.sleep(DRAIN_HOLD_SECONDS)
        return True

    def close(self) -> None:
        """Ends every Watch (UNAVAILABLE) once it has sent the current status."""
        self._closed = True
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            raise NotFound(f"unknown service {request.service!r}", reason="SERVICE_NOT_FOUND",
                           metadata={"service": request.service})
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in self._statuses.items()}
        )

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """The current status (SERVICE_UNKNOWN for a name not known yet), then each
        change, until the gateway shuts down."""
        service = request.service
        token = object()
        sent: int | None = None
        self._sent[token] = (service, sent)
        try:
            while True:
                status = self._statuses.get(service, SERVICE_UNKNOWN)
                if status == sent:
                    if self._closed:
                        raise Unavailable("the gateway is shutting down", reason="GATEWAY_SHUTTING_DOWN")
                    await self._changed.wait()
                    continue
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
                self._sent[token] = (service, sent)
                self._progress.set()
        finally:
            del self._sent[token]
            self._progress.set()


class Readiness(BackgroundLoop):
    """Every service (and "") SERVING while the store answers a ping in time,
    NOT_SERVING while it does not."""

    name = "readiness"

    def __init__(self, health: Health, client: aioredis.Redis, services: Iterable[str]) -> None:
        super().__init__()
        self.health = health
        self.client = client
        self.services = ("", *services)
        self.ready: bool | None = None

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.client.ping(), PING_TIMEOUT_SECONDS)
        except TimeoutError:
            self._failed(f"no answer within {PING_TIMEOUT_SECONDS:g}s")
            return False
        except (RedisError, OSError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        except Exception as exc:  # whatever it was, the store did not answer; the loop goes on
            log.exception("readiness ping failed")
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _failed(self, error: str) -> None:
        if self.ready is not False:
            log.warning("store not answering: NOT_SERVING", error=error[:500])

    def update(self, ready: bool) -> None:
        if ready and self.ready is False:
            log.info("store answering again: SERVING")
        self.ready = ready
        self.health.set(self.services, SERVING if ready else NOT_SERVING)

    async def run_round(self) -> float:
        self.update(await self.ping())
        return PING_INTERVAL_SECONDS
