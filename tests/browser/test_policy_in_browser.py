"""The URL policy enforced in real Chromium, with loopback targets only: the test
pages' server on 127.0.0.1 is reached as `localhost` (allowed here) and refused as
127.0.0.1 and its other spellings (not allowed)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from conveyor.artifacts import LocalArtifactStore
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from tests.browser.helpers import make_settings, run_steps, values_of


@pytest.fixture(scope="module")
async def localhost_runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserTaskRunner]:
    data = tmp_path_factory.mktemp("policy")
    settings = make_settings(data, allowed_hosts=["localhost"], max_concurrent_browsers=1)
    async with BrowserPool(settings, run_dir=data / "browsers") as pool:
        yield BrowserTaskRunner(pool, LocalArtifactStore(data / "artifacts"), settings)


def assert_policy_violation(error: BrowserTaskFailed, url_part: str) -> None:
    assert (error.reason, error.retryable, error.code) == (
        "URL_POLICY_VIOLATION", False, code_pb2.PERMISSION_DENIED
    )
    assert url_part in error.message, error.message
    assert "refused by the URL policy" in error.message


async def failure_of(runner: BrowserTaskRunner, steps: list[dict[str, Any]]) -> BrowserTaskFailed:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, steps)
    return caught.value


async def test_loopback_refused_when_no_host_is_allowed(tmp_path: Path, pages_port: int) -> None:
    settings = make_settings(tmp_path, allowed_hosts=[], max_concurrent_browsers=1)
    async with BrowserPool(settings, run_dir=tmp_path / "browsers") as pool:
        runner = BrowserTaskRunner(pool, LocalArtifactStore(tmp_path / "artifacts"), settings)
        for url in (f"http://127.0.0.1:{pages_port}/", f"http://localhost:{pages_port}/form.html"):
            error = await failure_of(runner, [{"navigate": {"url": url}}])
            assert_policy_violation(error, url)
            assert error.message.startswith("steps[0] ")
            assert error.metadata["step_index"] == "0" and error.metadata["action"] == "navigate"


async def test_allowed_host_works(localhost_runner: BrowserTaskRunner, pages_port: int) -> None:
    result = await run_steps(
        localhost_runner,
        [
            {"navigate": {"url": f"http://localhost:{pages_port}/list.html"}},
            {"extract": {"target": {"selector": "li.item"}, "key": "names", "all": True}},
        ],
    )
    assert values_of(result) == {"names": ["Apple", "Banana", "Cherry"]}
    assert list(result.blocked_urls) == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "[::ffff:127.0.0.1]", "[::1]"],
)
async def test_loopback_in_any_spelling_is_refused(
    localhost_runner: BrowserTaskRunner, pages_port: int, host: str
) -> None:
    error = await failure_of(localhost_runner, [{"navigate": {"url": f"http://{host}:{pages_port}/form.html"}}])
    assert (error.reason, error.retryable) == ("URL_POLICY_VIOLATION", False)


async def test_redirect_from_allowed_host_to_refused_host(
    localhost_runner: BrowserTaskRunner, pages_port: int
) -> None:
    # The 302 hop is not seen by request routing; the policy proxy refuses it.
    refused = f"http://127.0.0.1:{pages_port}/form.html"
    error = await failure_of(
        localhost_runner,
        [{"navigate": {"url": f"http://localhost:{pages_port}/redirect?to={refused}"}}],
    )
    assert_policy_violation(error, refused)


async def test_script_navigation_to_refused_host_fails_the_job(
    localhost_runner: BrowserTaskRunner, pages_port: int
) -> None:
    refused = f"http://127.0.0.1:{pages_port}/form.html"
    error = await failure_of(
        localhost_runner,
        [
            {"navigate": {"url": f"http://localhost:{pages_port}/redirect.html?to={refused}"}},
            {"timeout": "5s", "wait": {"urlContains": "never-there"}},
        ],
    )
    assert_policy_violation(error, refused)
    assert error.message.startswith("steps[1] ")


async def test_refused_subresources_are_blocked_and_listed(
    localhost_runner: BrowserTaskRunner, pages_port: int
) -> None:
    result = await run_steps(
        localhost_runner,
        [
            {"navigate": {"url": f"http://localhost:{pages_port}/subresources.html"}},
            # A refused websocket fails as a network error: its page hears "error" and
            # then "close" (this page reports both).
            {"expect": {"target": {"selector": "#status"}, "textContains": "fetch refused, websocket refused"}},
        ],
    )
    other = f"127.0.0.1:{pages_port}"
    assert sorted(result.blocked_urls) == sorted(
        [f"http://{other}/pixel.svg", f"http://{other}/list.html", f"ws://{other}/socket"]
    )


async def test_other_schemes_are_refused(localhost_runner: BrowserTaskRunner) -> None:
    for url in ("file:///etc/passwd", "ftp://localhost/", "chrome://version"):
        error = await failure_of(localhost_runner, [{"navigate": {"url": url}}])
        assert_policy_violation(error, url)


async def test_webrtc_and_webtransport_send_no_udp(localhost_runner: BrowserTaskRunner, pages_port: int) -> None:
    """A page's WebRTC (STUN) and WebTransport (QUIC) go over UDP, which no proxy
    carries: they must not reach an address the policy refuses -- here a UDP socket of
    the test on 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        async with localhost_runner.pool.context() as session:
            await session.page.goto(f"http://localhost:{pages_port}/form.html")
            candidates = await session.page.evaluate(
                """async (port) => {
                    const pc = new RTCPeerConnection({iceServers: [{urls: "stun:127.0.0.1:" + port}]});
                    const found = [];
                    pc.onicecandidate = (e) => { if (e.candidate) found.push(e.candidate.candidate); };
                    const complete = new Promise((resolve) => {
                        pc.onicegatheringstatechange = () => {
                            if (pc.iceGatheringState === "complete") resolve();
                        };
                    });
                    pc.createDataChannel("probe");
                    await pc.setLocalDescription(await pc.createOffer());
                    await complete;
                    pc.close();
                    return found;
                }""",
                listener.getsockname()[1],
            )
            transport = await session.page.evaluate(
                """async (port) => {
                    if (typeof WebTransport === "undefined") return "unsupported";
                    try {
                        await new WebTransport("https://127.0.0.1:" + port + "/probe").ready;
                        return "connected";
                    } catch (error) {
                        return "refused";
                    }
                }""",
                listener.getsockname()[1],
            )
        assert candidates == []
        assert transport == "refused"
        with pytest.raises(BlockingIOError):
            listener.recvfrom(2048)
    finally:
        listener.close()
