"""One Redis connection that every task of a process shares for the store's scripts
(auto-pipelining, as ioredis does for BullMQ): each command is written to the socket as
it comes and its reply is matched by order (Redis answers one connection's commands in
the order they came), parsed by hiredis in the socket's own callback.

Why: redis-py's asyncio client costs ~150-230 µs of CPU per command on this 2-core
machine (pool checkout and release, retry and timeout wrappers, its stream reader,
command observability), against ~35-60 µs here; and concurrent callers need neither a
pool connection each nor a round trip each. A SubmitJob makes one such call, the
executor's claims, acks and finishes more.

A blocking command (BLPOP, XREAD BLOCK, WAIT) holds up every caller behind it: it goes
on the shared connection of a client that is its caller's alone (the executor's wake-up
client, the event hub's reader), with `within` set so that a connection that stopped
answering is dropped; submits under CONVEYOR_REDIS_WAIT_REPLICAS stay on the pool.

The connection is made by the pooled client's own connection class, so it is the same
server with the same handshake (TLS and its checks, AUTH, SELECT, CLIENT SETNAME, and
for a Sentinel URL the primary that the sentinels name), in RESP2, then read by a
hiredis parser instead.

Like the pooled client (conveyor/redis_connection.py), a command whose connection is
found dead (Redis restarted, a failover, a primary demoted: READONLY) is sent again on a
new one, up to RECONNECT_RETRIES times with a short backoff, then fails with redis-py's
ConnectionError; sending a script again is safe (see connect()).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError

#: Times a command is sent again on a new connection (as redis_connection.connect's).
RECONNECT_RETRIES = 3
#: Backoff before each new try: 50 ms, doubling, at most 500 ms.
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 0.5
#: How long past its block a blocking command may go unanswered before its connection
#: counts as dead (redis-py's socket timeout of the pool connections it replaced).
BLOCK_GRACE_SECONDS = 5.0


class FunctionLibrary(Protocol):
    """A Redis function library as the connection runs it (conveyor/store/scripts.py)."""

    def fcall(self, command: str, args: Sequence[Any]) -> tuple[Any, ...]: ...

    def load_command(self) -> tuple[str, ...]: ...

    def is_missing(self, reply: object) -> bool: ...


def _error(reply: hiredis.ReplyError) -> Exception:
    """An error reply as redis-py raises it (ResponseError, ReadOnlyError, ...)."""
    return BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call,no-any-return]


class _Lost(Exception):
    """The connection died with the command on it (sent again, or a ConnectionError)."""


class _Replies(asyncio.Protocol):
    """Parses the socket's bytes into replies, handed to the waiting callers in order."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.lost: BaseException | None = None
        self.stream: asyncio.StreamWriter | None = None

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(packed)
        return future

    def send_many(self, packed: list[bytes]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in packed]
        self.waiting.extend(futures)
        self.transport.write(b"".join(packed))
        return futures

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.drop(exc)
                return
            if reply is False:
                return
            if not self.waiting:  # (nothing sent asks for it: a server push)
                continue
            future = self.waiting.popleft()
            if not future.done():  # (its caller may have gone)
                future.set_result(reply)

    def drop(self, exc: BaseException) -> None:
        """Close it now: no command is sent on it from here on."""
        self._fail(exc)
        self.transport.close()

    def eof_received(self) -> bool | None:
        self._fail(RedisConnectionError("Redis closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisConnectionError("the Redis connection was closed"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(_Lost(str(exc)))


class MultiplexedConnection:
    """The shared connection of one pooled client (`client`): made when first used,
    made again when found dead."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._replies: _Replies | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Replies:
        replies = self._replies
        if replies is not None and replies.lost is None:
            return replies
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            replies = self._replies
            if replies is not None and replies.lost is None:
                return replies
            # The pool's own kind of connection, speaking RESP2: a reply is only ever
            # the answer to a command (RESP3 may push messages between replies).
            connection: Any = self._pool.connection_class(**{**self._pool.connection_kwargs, "protocol": 2})
            await connection.connect()  # the pooled client's own handshake (TLS, AUTH, Sentinel...)
            writer = connection._writer  # its stream, taken over: read by hiredis from here on
            if writer is None:
                raise RedisConnectionError("the Redis connection did not open")
            transport: asyncio.Transport = writer.transport
            connection._writer = connection._reader = None  # (so that it does not close it when collected)
            replies = _Replies(transport)
            replies.stream = writer  # kept: a StreamWriter closes its transport when collected
            transport.set_protocol(replies)
            self._replies = replies
            return replies

    async def execute(self, *args: Any, within: float | None = None) -> Any:
        """The command's reply; an error reply is raised as redis-py raises it."""
        (reply,) = await self.execute_many([args], within=within)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Any]], *, within: float | None = None) -> list[Any]:
        """The commands written at once, their replies in order; an error reply is its
        exception, in its place (as redis-py's pipeline.execute(raise_on_error=False)).
        With `within` (seconds), replies that have not all come by then mean the
        connection is dead (a blocking command's caller passes its block plus a grace):
        it is dropped, and the commands go again on a new one."""
        packed = [hiredis.pack_command(tuple(c)) for c in commands]
        for attempt in range(RECONNECT_RETRIES + 1):
            try:
                replies = await self._connection()
                watchdog = None if within is None else asyncio.get_running_loop().call_later(
                    within, replies.drop, RedisConnectionError(f"no reply from Redis within {within} s"))
                try:
                    if len(packed) == 1:
                        got = [await replies.send(packed[0])]
                    else:
                        got = await asyncio.gather(*replies.send_many(packed))
                finally:
                    if watchdog is not None:
                        watchdog.cancel()
            except (_Lost, OSError, RedisConnectionError) as exc:
                if attempt == RECONNECT_RETRIES:
                    raise RedisConnectionError(f"Redis connection lost: {exc}") from None
                await asyncio.sleep(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
                continue
            out = [_error(r) if isinstance(r, hiredis.ReplyError) else r for r in got]
            if any(isinstance(r, ReadOnlyError) for r in out):
                # A primary demoted by a failover: drop it; the next connection asks the
                # sentinels again (as redis-py's Sentinel connections do), and the
                # commands go again (each is a whole script: one refused did nothing).
                replies.drop(RedisConnectionError("the Redis server is read-only (a replica)"))
                if attempt < RECONNECT_RETRIES:
                    continue
                raise RedisConnectionError("the Redis server is read-only (a replica)")
            return out
        raise AssertionError("unreachable")

    async def fcall_stream(self, library: FunctionLibrary, command: str,
                           arg_lists: Iterable[Sequence[Any]]) -> list[Any]:
        """fcall_many for arguments made as they are taken: each command is written as
        soon as its arguments are made, so Redis runs it while the next are made (a
        SubmitJobs' later jobs are built while its first are created). Replies (or
        error replies, as exceptions) in order. A connection lost on the way, or a
        primary found read-only, and the commands go again, all of them, as
        fcall_many sends them."""
        sent: list[Sequence[Any]] = []
        futures: list[asyncio.Future[Any]] = []
        pending = iter(arg_lists)
        try:
            replies = await self._connection()
            for args in pending:
                sent.append(args)
                futures.append(replies.send(hiredis.pack_command(library.fcall(command, args))))
            if futures:
                await futures[-1]  # (replies come in order: the last one answered means all were)
            got = [f.result() for f in futures]
        except (_Lost, OSError, RedisConnectionError):
            sent.extend(pending)  # (the rest, if the connection failed while they were made)
            return await self.fcall_many(library, command, sent)
        out = [_error(r) if isinstance(r, hiredis.ReplyError) else r for r in got]
        if any(isinstance(r, ReadOnlyError) or library.is_missing(r) for r in out):
            return await self.fcall_many(library, command, sent)
        return out

    async def fcall(self, library: FunctionLibrary, command: str, args: Sequence[Any]) -> Any:
        """Run a command of the store's function library (loading the library when the
        server lacks it: restarted, failed over)."""
        (reply,) = await self.fcall_many(library, command, [args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def fcall_many(self, library: FunctionLibrary, command: str, args: Sequence[Sequence[Any]]) -> list[Any]:
        """The command once per argument list, written at once; replies (or error
        replies, as exceptions) in order."""
        out = await self.execute_many([library.fcall(command, a) for a in args])
        again = [i for i, r in enumerate(out) if library.is_missing(r)]
        if again:
            await self.execute(*library.load_command())
            for i, reply in zip(again, await self.execute_many([library.fcall(command, args[i]) for i in again]),
                                strict=True):
                out[i] = reply
        return out

    def close(self) -> None:
        if self._replies is not None:
            self._replies.drop(RedisConnectionError("the client was closed"))
            self._replies = None
