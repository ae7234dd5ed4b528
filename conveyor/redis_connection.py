"""Every Redis client of the services is made here, from one URL: a plain server
(`redis://`, `rediss://`, `unix://`) or a primary found through Redis Sentinel.

A Sentinel URL names the sentinels and the monitored service (the primary's name in
the sentinels' `sentinel monitor <name> ...`)::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...     TLS to the sentinels and to the Redis servers

the scheme and layout of the `redis-sentinel-url` convention (port 26379 by default).
The user and password are the Redis servers' (the primary's and replicas'), as in a
`redis://` URL; sentinels that want their own are given `sentinel_username` /
`sentinel_password` query arguments. The other query arguments are redis-py's
connection arguments (`ssl_ca_certs`, `ssl_certfile`, `socket_timeout`, ...), as with
`rediss://`.

Through Sentinel a client asks the sentinels for the primary's address on every new
connection; a connection that finds its server gone or demoted (READONLY) is dropped
and the command sent again on a new one, so that after a failover every client
follows the promoted replica by itself, without a restart. While no primary answers
(from the kill until the promotion: Sentinel's `down-after-milliseconds` plus its
election) commands fail as they would with Redis down: the gateway answers
UNAVAILABLE and the executors' loops retry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as ssentinel
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from conveyor.redis_multiplex import MultiplexedConnection
from conveyor.redis_url import is_sentinel_url, parse_sentinel_url

#: Times a command is sent again on a new connection when its own is found dead.
RECONNECT_RETRIES = 3


class BlockingSentinelConnectionPool(asentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool of the primary's connections, bounded like the plain one:
    a caller that finds every connection in use waits for one instead of failing."""


class ConveyorRedis(aioredis.Redis):
    """The pooled client, and beside it one connection shared by all of the process's
    store scripts (conveyor/redis_multiplex.py), made when first used, closed with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.multiplexed = MultiplexedConnection(self)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self.multiplexed.close()
        await super().aclose(close_connection_pool)


class SentinelRedis(ConveyorRedis):
    """A client of the primary that closes its sentinels' connections with its own."""

    sentinel_manager: asentinel.Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


class SyncSentinelRedis(redis.Redis):
    """The blocking one."""

    sentinel_manager: ssentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                client.close()


def _check_tls_args(url: str) -> None:
    parts = urlsplit(url)
    tls_args = sorted(name for name in parse_qs(parts.query) if name.startswith("ssl_"))
    if tls_args and parts.scheme not in ("rediss", "rediss+sentinel"):
        # redis-py would fail each connection with an unexpected keyword argument.
        raise ValueError(f"{', '.join(tls_args)} in a {parts.scheme}:// Redis URL: TLS needs rediss://")


def connect(
    url: str, *, max_connections: int = 32, client_name: str | None = None, **options: Any
) -> ConveyorRedis:
    """An asyncio client with a bounded, blocking pool: however many callers wait on
    it, the process holds at most `max_connections` connections (named `client_name`
    in CLIENT LIST). `options` are further connection arguments (socket_timeout, ...).

    A command that finds its connection dead (Redis restarted, a proxy dropped it, a
    failover) is sent again on a new one, up to three times within half a second,
    instead of failing the caller once per stale pooled connection. Sending a script
    again is safe: each one is atomic, and one that did run the first time (its reply
    lost, which takes Redis failing mid-reply) finds its work done: a finished attempt
    is stale, a created job is answered as existing, and a job claimed by a take or
    claim whose reply was lost is recovered by its stall deadline.

    TLS is the URL's: `rediss://` (Settings.effective_redis_url adds the
    CONVEYOR_REDIS_TLS_* files as its `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile`
    query arguments), the server's name checked against its certificate. A Redis ACL
    user and password are the URL's too: `rediss://user:password@host:port/0`. A
    `redis+sentinel://` URL gives a client of the primary that Sentinel names."""
    _check_tls_args(url)
    kwargs: dict[str, Any] = {
        "max_connections": max_connections, "timeout": 30, "client_name": client_name,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RECONNECT_RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        **options,
    }
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = asentinel.Sentinel(
            target.sentinels, sentinel_kwargs=target.sentinel, **target.connection
        )
        client: SentinelRedis = sentinel.master_for(
            target.service, redis_class=SentinelRedis, connection_pool_class=BlockingSentinelConnectionPool, **kwargs,
        )
        client.sentinel_manager = sentinel
        return client
    pool = aioredis.BlockingConnectionPool.from_url(url, **kwargs)
    return ConveyorRedis(connection_pool=pool)


def connect_sync(url: str, *, client_name: str | None = None, **options: Any) -> redis.Redis:
    """A blocking (threaded) client of the same Redis, for Dramatiq's broker and for
    tools: the primary that Sentinel names for a Sentinel URL."""
    _check_tls_args(url)
    kwargs: dict[str, Any] = {
        "client_name": client_name,
        "retry": SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RECONNECT_RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        **options,
    }
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = ssentinel.Sentinel(
            target.sentinels, sentinel_kwargs=target.sentinel, **target.connection
        )
        client: SyncSentinelRedis = sentinel.master_for(
            target.service, redis_class=SyncSentinelRedis, **kwargs
        )
        client.sentinel_manager = sentinel
        return client
    return redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, **kwargs))


