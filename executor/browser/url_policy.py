"""The URL policy: which URLs and hosts a job's browser may reach.

Only http and https (ws and wss for websockets). A host is refused when any address
it resolves to is loopback, private, link-local, unique-local, CGNAT, multicast,
unspecified, reserved or a cloud metadata address, IPv4 embedded in IPv6 included,
and IPv4 literals in any spelling the URL standard accepts (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`) -- unless the host is named in the allowed list.

Pure parts (`parse_ip_host`, `address_refusal`, `check_addresses`) never touch the
network; `UrlPolicy` resolves names with the event loop's getaddrinfo and caches the
answer for its lifetime (one policy per browser context, i.e. per job), so that the
check and the connection the proxy makes use the same addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HTTP_SCHEMES = frozenset({"http", "https"})
WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})
# Schemes that never reach the network (content is in the URL or the page).
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


@dataclass(frozen=True)
class Decision:
    """The policy's answer for a URL or a host."""

    allowed: bool
    reason: str = ""
    host: str = ""
    addresses: tuple[IPAddress, ...] = field(default=())
    unresolved: bool = False
    """Not allowed because the name did not resolve (or resolving timed out): a
    network error, not a refusal. Nothing was decided about any address."""

    @property
    def refused(self) -> bool:
        """Refused by the policy (as opposed to a host that could not be resolved)."""
        return not self.allowed and not self.unresolved

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED_LOCAL = Decision(True, "local scheme")


# --- pure checks ---------------------------------------------------------------------


def normalize_host(host: str) -> str:
    """Lower case, without IPv6 brackets and a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".") if host not in {".", ""} else host


def _parse_ipv4_part(part: str) -> int | None:
    """One dotted part as the URL standard reads it: 0x.. hex, 0.. octal, else decimal."""
    if not part:
        return None
    try:
        if part[:2] in {"0x", "0X"}:
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part[0] == "0":
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any spelling the WHATWG URL standard accepts, else None.

    `127.0.0.1`, `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1` are all 127.0.0.1.
    """
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a URL host names literally (IPv6 in brackets or not, any IPv4
    spelling), or None for a name that needs resolving."""
    host = normalize_host(host)
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4_host(host)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, compatible,
    NAT64, 6to4), which is where a packet to it may really end up."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if any(address in net for net in (*_NAT64, _IPV4_TRANSLATED, _IPV4_COMPATIBLE)):
        return ipaddress.IPv4Address(packed[-4:])
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why the policy refuses to connect to this address, or None if it may."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    if address.is_loopback:
        return "loopback address"
    if address.is_unspecified:
        return "unspecified address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            why = address_refusal(inner)
            return f"IPv6 address embedding {inner}: {why}" if why else None
        if address.scope_id:
            return "scoped IPv6 address"
        if address in _UNIQUE_LOCAL:
            return "unique-local address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT) address"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return "non-global address"
    return None


def check_addresses(host: str, addresses: Sequence[IPAddress]) -> Decision:
    """The decision for a host that resolved to these addresses: refused if any of
    them is refused (a name with one public and one private address is refused)."""
    if not addresses:
        return Decision(False, f"{host} resolved to no address", host, unresolved=True)
    literal = parse_ip_host(host) is not None
    for address in addresses:
        why = address_refusal(address)
        if why:
            said = f"{host}: {why}" if literal else f"{host} resolves to {address} ({why})"
            return Decision(False, said, host, tuple(addresses))
    return Decision(True, "public address", host, tuple(addresses))


def host_is_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether the configuration names the host: exactly, or a `.suffix` entry
    matching the host and its subdomains."""
    host = normalize_host(host)
    for raw in allowed_hosts:
        entry = normalize_host(raw)
        if not entry:
            continue
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def direct_hosts(allowed_hosts: Iterable[str]) -> list[str]:
    """The allowed hosts a context reaches without its policy proxy (Chromium's proxy
    bypass list): IP literals in the one spelling Chromium puts in URLs, IPv6 in
    brackets. The proxy would allow them on every port and connect to the very address
    named, with no name to resolve: going direct is the same decision, without relaying
    every byte through this process. Names (which the proxy resolves and checks) and
    `.suffix` entries are never bypassed."""
    found: list[str] = []
    for raw in allowed_hosts:
        entry = normalize_host(raw)
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            continue
        if str(address) != entry:
            continue  # another spelling: the proxy decides those
        rule = f"[{entry}]" if address.version == 6 else entry
        if rule not in found:
            found.append(rule)
    return found


def split_url(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, or None if it cannot be read."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    return scheme, host, port


# --- resolving policy -----------------------------------------------------------------


def host_not_resolved(host: str, exc: BaseException) -> Decision:
    """The decision for a name whose resolution failed: not allowed (nothing to
    connect to), but not a policy refusal either."""
    why = str(exc) or ("timeout" if isinstance(exc, TimeoutError) else type(exc).__name__)
    return Decision(False, f"{host} could not be resolved ({why})", host, unresolved=True)


#: Names that never resolve (RFC 6761 §6.4: resolvers should answer at once,
#: without asking a DNS server).
NEVER_RESOLVED_TLD = "invalid"


async def resolve_with_loop(host: str, port: int) -> list[IPAddress]:
    if host == NEVER_RESOLVED_TLD or host.endswith("." + NEVER_RESOLVED_TLD):
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (.{NEVER_RESOLVED_TLD} never resolves)")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if address not in found:
            found.append(address)
    return found


class UrlPolicy:
    """Decides URLs and hosts; resolves names once and remembers the answer.

    One instance per browser context: the route handler and the proxy share it, so
    the addresses that were checked are the ones connected to."""

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        *,
        resolver: Resolver = resolve_with_loop,
        resolve_timeout_seconds: float = 10.0,
    ) -> None:
        self.allowed_hosts = tuple(normalize_host(h) for h in allowed_hosts)
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout_seconds
        self._cache: dict[str, asyncio.Future[Decision]] = {}

    def is_allowed_host(self, host: str) -> bool:
        return host_is_allowed(host, self.allowed_hosts)

    async def check_url(self, url: str, *, websocket: bool = False) -> Decision:
        """Decide a URL: its scheme, then its host (see `check_host`)."""
        parts = split_url(url)
        if parts is None:
            return Decision(False, f"unreadable URL {url[:200]!r}")
        scheme, host, port = parts
        if scheme in LOCAL_SCHEMES:
            return ALLOWED_LOCAL
        schemes = WEBSOCKET_SCHEMES | HTTP_SCHEMES if websocket else HTTP_SCHEMES
        if scheme not in schemes:
            return Decision(False, f"scheme {scheme!r} is not allowed", host)
        if not host:
            return Decision(False, "URL has no host")
        return await self.check_host(host, port)

    async def check_host(self, host: str, port: int) -> Decision:
        """Decide a host: allowed by configuration, else refused if it (or any address
        it resolves to) is not a public address."""
        host = normalize_host(host)
        if self.is_allowed_host(host):
            return Decision(True, "allowed by configuration", host)
        if host in METADATA_HOSTS:
            return Decision(False, f"{host} is a cloud metadata host", host)
        literal = parse_ip_host(host)
        if literal is not None:
            return check_addresses(host, [literal])
        pending = self._cache.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve_and_check(host, port))
            self._cache[host] = pending
        return await asyncio.shield(pending)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Addresses to connect to for an allowed host (cached when they were checked)."""
        host = normalize_host(host)
        literal = parse_ip_host(host)
        if literal is not None:
            return [literal]
        pending = self._cache.get(host)
        if pending is not None:
            decision = await asyncio.shield(pending)
            if decision.addresses:
                return list(decision.addresses)
        async with asyncio.timeout(self._resolve_timeout):
            return await self._resolver(host, port)

    async def _resolve_and_check(self, host: str, port: int) -> Decision:
        try:
            async with asyncio.timeout(self._resolve_timeout):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: bad IDNA names
            return host_not_resolved(host, exc)
        return check_addresses(host, addresses)
