"""The URL policy's decisions, checked without connecting anywhere: pure functions
over address literals, and a resolver that answers from a table."""

from __future__ import annotations

import ipaddress

import pytest

from executor.browser.url_policy import (
    IPAddress,
    UrlPolicy,
    address_refusal,
    check_addresses,
    host_is_allowed,
    parse_ip_host,
)

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.1", "127.0.0.1"),  # hex, short
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short
        ("127.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("1.2.3.4.", "1.2.3.4"),
        ("example.com", None),
        ("256.1.1.1", None),
        ("1.2.3.4.5", None),
        ("0x100000000", None),
    ],
)
def test_ip_literals_in_every_spelling(host: str, expected: str | None) -> None:
    parsed = parse_ip_host(host)
    assert (str(parsed) if parsed is not None else None) == expected


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("240.0.0.1", "private"),  # reserved (Python counts it private)
        ("255.255.255.255", "private"),
    ],
)
def test_refused_addresses(address: str, why: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    assert check_addresses("mixed.test", [public]).allowed
    decision = check_addresses("mixed.test", [public, LOOPBACK])
    assert not decision.allowed and "127.0.0.1" in decision.reason
    assert not check_addresses("nothing.test", []).allowed


def test_allowed_hosts_match_exactly_or_by_dot_suffix() -> None:
    allowed = ["localhost", ".corp.test", "10.0.0.5"]
    assert host_is_allowed("LOCALHOST.", allowed)
    assert host_is_allowed("corp.test", allowed)
    assert host_is_allowed("api.corp.test", allowed)
    assert host_is_allowed("10.0.0.5", allowed)
    assert not host_is_allowed("evilcorp.test", allowed)
    assert not host_is_allowed("localhost.evil.test", allowed)
    assert not host_is_allowed("127.0.0.1", allowed)


class TableResolver:
    """Answers from a table; remembers what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError("Name or service not known")
        return [ipaddress.ip_address(a) for a in self.table[host]]


@pytest.fixture
def resolver() -> TableResolver:
    return TableResolver(
        {
            "public.test": ["93.184.216.34", "2606:2800:220:1::1"],
            "internal.test": ["10.0.0.7"],
            "rebind.test": ["93.184.216.34", "127.0.0.1"],
            "mapped.test": ["::ffff:192.168.0.1"],
            "localhost": ["127.0.0.1", "::1"],
        }
    )


async def test_check_url_resolves_names_and_refuses_private_answers(resolver: TableResolver) -> None:
    policy = UrlPolicy([], resolver=resolver)
    assert (await policy.check_url("https://public.test/path?q=1")).allowed
    assert not (await policy.check_url("http://internal.test/")).allowed
    assert not (await policy.check_url("http://rebind.test/")).allowed
    assert not (await policy.check_url("http://mapped.test/")).allowed
    assert not (await policy.check_url("http://localhost:8080/")).allowed
    unknown = await policy.check_url("http://unknown.test/")
    assert not unknown.allowed and "could not be resolved" in unknown.reason
    # Each name is resolved once per policy (per job); the proxy reuses the answer.
    assert (await policy.check_url("https://public.test/other")).allowed
    assert resolver.asked.count("public.test") == 1
    assert [str(a) for a in await policy.resolve("public.test", 443)] == [
        "93.184.216.34", "2606:2800:220:1::1"
    ]
    assert resolver.asked.count("public.test") == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://127.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://0.0.0.0:22/",
        "http://100.64.1.1/",
    ],
)
async def test_check_url_refuses_literals_and_metadata_without_resolving(
    url: str, resolver: TableResolver
) -> None:
    decision = await UrlPolicy([], resolver=resolver).check_url(url)
    assert not decision.allowed, url
    assert resolver.asked == []


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://public.test/", "javascript:alert(1)", "chrome://settings", "gopher://x/"],
)
async def test_only_http_and_https(url: str, resolver: TableResolver) -> None:
    decision = await UrlPolicy([], resolver=resolver).check_url(url)
    assert not decision.allowed and "scheme" in decision.reason


async def test_websocket_schemes_only_for_websockets(resolver: TableResolver) -> None:
    policy = UrlPolicy([], resolver=resolver)
    assert not (await policy.check_url("wss://public.test/socket")).allowed
    assert (await policy.check_url("wss://public.test/socket", websocket=True)).allowed
    assert not (await policy.check_url("ws://127.0.0.1/socket", websocket=True)).allowed


async def test_local_schemes_never_reach_the_network(resolver: TableResolver) -> None:
    policy = UrlPolicy([], resolver=resolver)
    assert (await policy.check_url("data:text/html,<p>x</p>")).allowed
    assert (await policy.check_url("about:blank")).allowed


async def test_allowed_hosts_let_private_hosts_through(resolver: TableResolver) -> None:
    policy = UrlPolicy(["localhost", "internal.test", "127.0.0.1"], resolver=resolver)
    assert (await policy.check_url("http://localhost:8080/")).allowed
    assert (await policy.check_url("http://internal.test/")).allowed
    assert (await policy.check_url("http://127.0.0.1/")).allowed
    # Allowing a name does not allow other spellings of its address.
    assert not (await policy.check_url("http://127.1/")).allowed
    assert not (await policy.check_url("http://[::1]/")).allowed
