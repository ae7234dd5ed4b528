"""The SOCKS5 policy proxy, spoken to directly over loopback: an allowed host is
piped through, a refused one gets "connection not allowed by ruleset" and is
reported; nothing else is connected to."""

from __future__ import annotations

import asyncio
import struct

from executor.browser.policy_proxy import PolicyProxy
from executor.browser.url_policy import Decision, UrlPolicy


async def socks_connect(
    proxy_port: int, host: str, port: int
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    return reply[1], reader, writer


async def test_allowed_host_is_piped_and_refused_host_is_reported(pages_port: int) -> None:
    refusals: list[tuple[str, int, Decision]] = []
    proxy = PolicyProxy(
        UrlPolicy(["127.0.0.1"]), on_refused=lambda h, p, d: refusals.append((h, p, d))
    )
    port = await proxy.start()
    try:
        async with asyncio.timeout(10):
            code, reader, writer = await socks_connect(port, "127.0.0.1", pages_port)
            assert code == 0
            writer.write(b"GET /list.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            response = await reader.read()
            writer.close()
            assert response.startswith(b"HTTP/1.0 200") and b"Banana" in response

            for refused_host in ("localhost", "2130706433", "169.254.169.254"):
                code, _, writer = await socks_connect(port, refused_host, pages_port)
                writer.close()
                assert code == 2, refused_host
    finally:
        await proxy.close()
    assert [(h, p) for h, p, _ in refusals] == [
        ("localhost", pages_port), ("2130706433", pages_port), ("169.254.169.254", pages_port)
    ]
    assert all(not d.allowed for _, _, d in refusals)


async def test_only_connect_is_supported(pages_port: int) -> None:
    proxy = PolicyProxy(UrlPolicy(["127.0.0.1"]))
    port = await proxy.start()
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            # UDP ASSOCIATE (3) to 127.0.0.1
            writer.write(b"\x05\x03\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", pages_port))
            reply = await reader.readexactly(10)
            writer.close()
            assert reply[1] == 7
    finally:
        await proxy.close()
