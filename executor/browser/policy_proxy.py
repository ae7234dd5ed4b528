"""A SOCKS5 proxy on loopback that enforces the URL policy on every connection a
browser context opens.

Each job's context is pointed at its own proxy (`socks5://127.0.0.1:<port>`), with
loopback proxied too, and QUIC off. Chromium then resolves no names itself: it asks
the proxy to CONNECT to a host and port, and the proxy decides with the job's
`UrlPolicy`, resolves the name, and connects to the very addresses it checked. This
catches what a request interceptor does not see -- redirect hops (Playwright routes
only the first request of a redirect chain), DNS answers that change between check
and connect, connections from workers, websockets, preconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from typing import NoReturn

import structlog

from executor.browser.url_policy import Decision, UrlPolicy, host_not_resolved, normalize_host

log = structlog.get_logger()

SOCKS_VERSION = 5
NO_AUTH = 0
NO_ACCEPTABLE_METHOD = 0xFF
CMD_CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
REPLY_OK = 0
REPLY_GENERAL_FAILURE = 1
REPLY_NOT_ALLOWED = 2
REPLY_HOST_UNREACHABLE = 4
REPLY_COMMAND_NOT_SUPPORTED = 7
REPLY_ADDRESS_NOT_SUPPORTED = 8

HANDSHAKE_TIMEOUT_SECONDS = 10.0
PIPE_CHUNK = 64 * 1024

RefusalListener = Callable[[str, int, Decision], None]
#: Hears of a host the proxy could not resolve (a network error, not a refusal).
UnresolvedListener = Callable[[str, int, Decision], None]


class _Refused(Exception):
    def __init__(self, reply: int) -> None:
        self.reply = reply


class PolicyProxy:
    """SOCKS5 (CONNECT only, no auth) on 127.0.0.1, deciding each connection with
    `policy`; `on_refused(host, port, decision)` hears of each refusal, and
    `on_unresolved(host, port, decision)` of each host that did not resolve (answered
    "host unreachable", as a network error, and not counted as a refusal)."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        on_refused: RefusalListener | None = None,
        on_unresolved: UnresolvedListener | None = None,
        connect_timeout_seconds: float = 15.0,
        refusal_log_level: int = logging.INFO,
    ) -> None:
        self.policy = policy
        self.refusal_log_level = refusal_log_level
        self.on_refused = on_refused
        self.on_unresolved = on_unresolved
        self.connect_timeout = connect_timeout_seconds
        self.refused: dict[tuple[str, int], Decision] = {}
        self.unresolved: dict[tuple[str, int], Decision] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def server_url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_SECONDS):
                    host, port = await self._handshake(reader, writer)
                async with asyncio.timeout(self.connect_timeout):
                    up_reader, upstream = await self._connect(host, port)
            except _Refused as refused:
                await _reply(writer, refused.reply)
                return
            except (TimeoutError, OSError):
                await _reply(writer, REPLY_HOST_UNREACHABLE)
                return
            self._writers.add(upstream)
            await _reply(writer, REPLY_OK)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("policy_proxy_connection_failed")
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int]:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != SOCKS_VERSION or NO_AUTH not in methods:
            writer.write(bytes([SOCKS_VERSION, NO_ACCEPTABLE_METHOD]))
            raise ConnectionError("unsupported SOCKS greeting")
        writer.write(bytes([SOCKS_VERSION, NO_AUTH]))
        version, command, _reserved, address_type = await reader.readexactly(4)
        if address_type == ATYP_IPV4:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif address_type == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif address_type == ATYP_DOMAIN:
            (length,) = await reader.readexactly(1)
            try:
                host = (await reader.readexactly(length)).decode("ascii")
            except UnicodeDecodeError:
                raise _Refused(REPLY_ADDRESS_NOT_SUPPORTED) from None
        else:
            raise _Refused(REPLY_ADDRESS_NOT_SUPPORTED)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != CMD_CONNECT:
            raise _Refused(REPLY_COMMAND_NOT_SUPPORTED)
        return host, port

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        decision = await self.policy.check_host(host, port)
        if decision.unresolved:
            self._unresolved(host, port, decision)
        if not decision.allowed:
            self.refused[(decision.host or host, port)] = decision
            log.log(
                self.refusal_log_level, "url_policy_refused_connection",
                host=host, port=port, reason=decision.reason,
            )
            if self.on_refused is not None:
                self.on_refused(host, port, decision)
            raise _Refused(REPLY_NOT_ALLOWED)
        try:
            addresses = await self.policy.resolve(host, port)
        except (OSError, TimeoutError, ValueError) as exc:  # an allowed name that does not resolve
            self._unresolved(host, port, host_not_resolved(normalize_host(host), exc))
        if not addresses:
            self._unresolved(host, port, host_not_resolved(normalize_host(host), OSError("no address")))
        last_error: OSError | None = None
        for address in addresses:
            try:
                return await asyncio.open_connection(str(address), port)
            except OSError as exc:
                last_error = exc
        raise last_error or OSError(f"no address for {host}")


    def _unresolved(self, host: str, port: int, decision: Decision) -> NoReturn:
        """A name that does not resolve: a network error (SOCKS "host unreachable"),
        told to `on_unresolved`, never recorded as a refusal."""
        self.unresolved[(decision.host or host, port)] = decision
        log.info("policy_proxy_host_not_resolved", host=host, port=port, reason=decision.reason)
        if self.on_unresolved is not None:
            self.on_unresolved(host, port, decision)
        raise _Refused(REPLY_HOST_UNREACHABLE)


async def _reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([SOCKS_VERSION, code, 0, ATYP_IPV4]) + socket.inet_aton("0.0.0.0") + b"\0\0")
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(PIPE_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
