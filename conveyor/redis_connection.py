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

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as ssentinel
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from conveyor.redis_multiplex import MultiplexedConnection

#: URL schemes of a primary found through Sentinel, and whether they mean TLS.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26379
#: Times a command is sent again on a new connection when its own is found dead.
RECONNECT_RETRIES = 3
#: How long a client waits for one sentinel before asking the next one.
SENTINEL_TIMEOUT_SECONDS = 2.0
#: Query arguments that are the sentinels' own, not the Redis servers'.
_SENTINEL_AUTH = {"sentinel_username": "username", "sentinel_password": "password"}


@dataclass(frozen=True)
class SentinelTarget:
    """A Sentinel URL, parsed: where the sentinels are, which service, and the
    connection arguments of the Redis servers and of the sentinels."""

    sentinels: list[tuple[str, int]]
    service: str
    tls: bool
    #: redis-py connection arguments of the primary's connections (db, auth, ssl_*, socket_*).
    connection: dict[str, Any] = field(default_factory=dict)
    #: ... and of the sentinels' (their own auth; TLS and socket options like the servers').
    sentinel: dict[str, Any] = field(default_factory=dict)


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme in SENTINEL_SCHEMES


def uses_tls(url: str) -> bool:
    """Whether the URL's connections are TLS ones (rediss:// or rediss+sentinel://)."""
    scheme = urlsplit(url).scheme
    return scheme == "rediss" or SENTINEL_SCHEMES.get(scheme, False)


def _host_port(text: str, url_shown: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"a sentinel without a host in {url_shown}")
    try:
        port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"sentinel {text!r} of {url_shown}: the port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"sentinel {text!r} of {url_shown}: port {port} out of range")
    return unquote(host), port


def parse_sentinel_url(url: str) -> SentinelTarget:
    """`redis+sentinel://[user:password@]h1:26379,h2:26380/mymaster/0?...`, checked:
    a ValueError names what is wrong (the password never shown)."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (redis+sentinel:// or rediss+sentinel://): {parts.scheme}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}://{hosts}{parts.path}"
    sentinels = [_host_port(h.strip(), shown) for h in hosts.split(",") if h.strip()]
    if not sentinels:
        raise ValueError(f"no sentinel host in {shown}")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"no service name in {shown}: redis+sentinel://host:26379/<service>[/db]")
    if len(path) > 2:
        raise ValueError(f"{shown}: the path is /<service>[/db]")
    service = path[0]
    db = path[1] if len(path) > 1 else "0"
    if not db.isdigit():
        raise ValueError(f"{shown}: the database {db!r} is not a number")
    tls = SENTINEL_SCHEMES[parts.scheme]
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    sentinel_auth = {_SENTINEL_AUTH[name]: query.pop(name) for name in list(query) if name in _SENTINEL_AUTH}
    if "ssl" in query:
        raise ValueError(f"{shown}: TLS is the scheme's (rediss+sentinel://), not an ssl argument")
    if not tls and (tls_args := sorted(n for n in query if n.startswith("ssl_"))):
        raise ValueError(f"{', '.join(tls_args)} in a {parts.scheme}:// URL: TLS needs rediss+sentinel://")
    # The servers' arguments as redis-py reads a redis:// URL (its casts of db, socket_*, ...).
    plain = f"redis://{userinfo + '@' if userinfo else ''}sentinel-host/{db}"
    if query:
        plain += "?" + urlencode(query)
    try:
        connection: dict[str, Any] = dict(parse_url(plain))
    except ValueError as exc:
        raise ValueError(f"{shown}: {exc}") from None
    connection.pop("host", None)
    connection.pop("port", None)
    sentinel = {k: v for k, v in connection.items() if k.startswith(("socket_", "ssl_"))}
    sentinel.setdefault("socket_timeout", SENTINEL_TIMEOUT_SECONDS)
    sentinel.setdefault("socket_connect_timeout", SENTINEL_TIMEOUT_SECONDS)
    sentinel.update(sentinel_auth)
    if tls:
        connection["ssl"] = True  # SentinelConnectionPool: SentinelManagedSSLConnection
        sentinel["ssl"] = True
    return SentinelTarget(sentinels, service, tls, connection, sentinel)


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
        sentinel = asentinel.Sentinel(  # type: ignore[no-untyped-call]
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
        sentinel = ssentinel.Sentinel(  # type: ignore[no-untyped-call]
            target.sentinels, sentinel_kwargs=target.sentinel, **target.connection
        )
        client: SyncSentinelRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service, redis_class=SyncSentinelRedis, **kwargs
        )
        client.sentinel_manager = sentinel
        return client
    return redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, **kwargs))


def check_url(url: str) -> None:
    """Raise a ValueError naming what is wrong with a Redis URL the services cannot use."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
    elif scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"CONVEYOR_REDIS_URL: {scheme or 'no'} scheme; one of redis://, rediss://, unix://, "
            "redis+sentinel://, rediss+sentinel://"
        )
