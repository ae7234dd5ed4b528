"""What the gateway's and the executor's HTTP endpoints share: the address setting's
reading, a small asyncio HTTP/1.1 server for GET routes (/metrics, /healthz, /readyz),
the Redis round-trip probe, and Prometheus exposition of a registry.

The server answers one GET per connection (then closes it, `Connection: close`), which
is all Prometheus and health probes need; anything else is 405/404. It binds beyond
loopback only when the address names such a host (a bare port is loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

log = structlog.get_logger("conveyor.metrics")

#: Buckets (seconds) of request and Redis latency histograms: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How often the Redis round-trip probe pings.
PING_INTERVAL_SECONDS = 2.0
MAX_REQUEST_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Awaitable[Response]]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 500: "Internal Server Error",
           503: "Service Unavailable"}


def parse_addr(addr: str) -> tuple[str, int] | None:
    """`host:port`, `[v6]:port`, `:port` or `port` (the last two on loopback); None
    for an empty address (the endpoint is off)."""
    addr = addr.strip()
    if not addr:
        return None
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = "", addr
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{addr!r} is not host:port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{addr!r}: port out of range")
    return host, number


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


class HttpEndpoint:
    """GET routes on one address, served on the running event loop."""

    def __init__(self, addr: tuple[str, int], routes: dict[str, Route], *, name: str) -> None:
        self.addr = addr
        self.routes = routes
        self.name = name
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = self.addr
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("http endpoint serving", endpoint=self.name, host=host, port=self.port, paths=sorted(self.routes))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_REQUEST_HEAD_BYTES:
                response = Response(400, b"request too large\n")
            else:
                response = await self._answer(head.split(b"\r\n", 1)[0].decode("latin-1"))
            method_head = head.startswith(b"HEAD ")
            writer.write(
                f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + (b"" if method_head else response.body)
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request_line: str) -> Response:
        parts = request_line.split()
        if len(parts) != 3:
            return Response(400, b"bad request line\n")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET\n")
        route = self.routes.get(target.split("?", 1)[0])
        if route is None:
            return Response(404, f"not found; try {', '.join(sorted(self.routes))}\n".encode())
        try:
            return await route()
        except Exception:
            log.exception("http endpoint route failed", endpoint=self.name, path=target)
            return Response(500, b"internal error\n")


def redis_ping_histogram(registry: CollectorRegistry | None, **kw: Any) -> Histogram:
    return Histogram(
        "conveyor_redis_roundtrip_seconds",
        "Round trip of a PING to the store (Redis) on the service's connection pool, every 2 s.",
        buckets=LATENCY_BUCKETS, registry=registry, **kw,
    )


async def probe_redis(client: Any, histogram: Histogram, interval: float = PING_INTERVAL_SECONDS) -> None:
    """PING the store every `interval` and observe each round trip (until cancelled);
    a failed ping is not observed (its absence shows as a gap in the count's rate)."""
    while True:
        started = time.perf_counter()
        try:
            await client.ping()
        except Exception as exc:
            log.debug("redis probe failed", error=str(exc)[:200])
        else:
            histogram.observe(time.perf_counter() - started)
        await asyncio.sleep(interval)
