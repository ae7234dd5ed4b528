"""Redis URLs as the services take them (CONVEYOR_REDIS_URL), read and checked without
loading redis-py (the CLI and the settings need no more): `redis://`, `rediss://`,
`unix://`, or a Sentinel URL (see conveyor/redis_connection.py, which makes the clients)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

#: URL schemes of a primary found through Sentinel, and whether they mean TLS.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26379
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
    from redis.asyncio.connection import parse_url  # (redis-py: loaded for a Sentinel URL only)

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
