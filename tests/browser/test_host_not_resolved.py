"""A host that does not resolve is a network error, not a URL policy violation.

Names under the reserved `.invalid` TLD (RFC 2606) never resolve; nothing here
connects anywhere but loopback. A navigation to such a host fails with a retryable
HOST_NOT_RESOLVED naming the host -- in the policy, the proxy, real Chromium and
through the whole system (retried) -- while an address that resolved and is refused
stays a non-retryable URL_POLICY_VIOLATION."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.rpc import code_pb2

from conveyor.artifacts import LocalArtifactStore
from conveyor.statuses import error_reason
from conveyor.v1 import job_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from executor.browser.policy_proxy import PolicyProxy
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from executor.browser.url_policy import Decision, UrlPolicy, resolve_with_loop
from tests.browser.helpers import make_settings, run_steps
from tests.support.grpc_helpers import submit_request, unique_queue, wait_state

NOWHERE = "nothing-here.invalid"


@pytest.fixture(scope="module")
async def localhost_runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserTaskRunner]:
    data = tmp_path_factory.mktemp("unresolved")
    settings = make_settings(data, allowed_hosts=["localhost"], max_concurrent_browsers=1)
    async with BrowserPool(settings, run_dir=data / "browsers") as pool:
        yield BrowserTaskRunner(pool, LocalArtifactStore(data / "artifacts"), settings)


def assert_host_not_resolved(error: BrowserTaskFailed) -> None:
    assert (error.reason, error.retryable, error.code) == ("HOST_NOT_RESOLVED", True, code_pb2.UNAVAILABLE), error
    assert error.metadata["host"] == NOWHERE
    assert NOWHERE in error.message and "could not be resolved" in error.message
    assert "URL policy" not in error.message


async def test_the_policy_tells_an_unresolved_name_from_a_refused_one() -> None:
    policy = UrlPolicy([])  # the real resolver
    unresolved = await policy.check_url(f"http://{NOWHERE}/")
    assert not unresolved.allowed and unresolved.unresolved and not unresolved.refused
    assert unresolved.host == NOWHERE and "could not be resolved" in unresolved.reason
    refused = await policy.check_url("http://localhost/")  # resolves (to loopback)
    assert refused.refused and not refused.unresolved


async def test_the_proxy_answers_host_unreachable_and_records_no_refusal() -> None:
    refusals: list[tuple[str, int, Decision]] = []
    unresolved: list[tuple[str, int, Decision]] = []
    proxy = PolicyProxy(
        UrlPolicy([]),
        on_refused=lambda h, p, d: refusals.append((h, p, d)),
        on_unresolved=lambda h, p, d: unresolved.append((h, p, d)),
    )
    port = await proxy.start()
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            name = NOWHERE.encode()
            writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", 80))
            reply = await reader.readexactly(10)
            writer.close()
    finally:
        await proxy.close()
    assert reply[1] == 4  # host unreachable, not 2 (not allowed by ruleset)
    assert refusals == [] and proxy.refused == {}
    assert [(h, p) for h, p, _ in unresolved] == [(NOWHERE, 80)]


async def test_navigation_to_an_unresolved_host_is_a_retryable_network_error(
    localhost_runner: BrowserTaskRunner,
) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(localhost_runner, [{"navigate": {"url": f"http://{NOWHERE}/"}}])
    assert_host_not_resolved(caught.value)
    assert caught.value.message.startswith("steps[0] ")
    assert list(caught.value.result.blocked_urls) == []


async def test_a_redirect_to_an_unresolved_host_is_a_network_error_too(
    localhost_runner: BrowserTaskRunner, pages_port: int
) -> None:
    # The 302 hop is not seen by request routing: the proxy finds the name unresolved.
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(localhost_runner, [
            {"navigate": {"url": f"http://localhost:{pages_port}/redirect?to=http://{NOWHERE}/form.html"}},
        ])
    assert_host_not_resolved(caught.value)


async def test_unresolved_subresources_fail_and_are_not_listed_as_refused(
    localhost_runner: BrowserTaskRunner, pages_port: int
) -> None:
    result = await run_steps(localhost_runner, [
        {"navigate": {"url": f"http://localhost:{pages_port}/unresolved.html"}},
        {"expect": {"target": {"selector": "#status"}, "textEquals": "fetch failed"}},
    ])
    assert list(result.blocked_urls) == []


async def test_through_the_system_unresolved_is_retried_and_a_refused_address_is_not(
    jobs: JobServiceStub, pages_port: int, tmp_path: Path
) -> None:
    """The session stack (CONVEYOR_ALLOWED_HOSTS=127.0.0.1, retry base 0.2 s)."""
    queue = unique_queue()
    unresolved = await jobs.SubmitJob(submit_request({
        "queue": queue, "maxAttempts": 2,
        "browser": {"steps": [{"navigate": {"url": f"http://{NOWHERE}/"}}]},
    }))
    # localhost is loopback and not in CONVEYOR_ALLOWED_HOSTS: it resolves, and is refused.
    refused = await jobs.SubmitJob(submit_request({
        "queue": queue, "maxAttempts": 2,
        "browser": {"steps": [{"navigate": {"url": f"http://localhost:{pages_port}/form.html"}}]},
    }))
    job = await wait_state(jobs, unresolved.id, {job_pb2.JOB_STATE_FAILED}, timeout=60)
    assert job.attempt == 2, job
    assert error_reason(job.error) == "HOST_NOT_RESOLVED"
    assert job.error.code == code_pb2.UNAVAILABLE and NOWHERE in job.error.message

    job = await wait_state(jobs, refused.id, {job_pb2.JOB_STATE_FAILED}, timeout=60)
    assert job.attempt == 1, job
    assert error_reason(job.error) == "URL_POLICY_VIOLATION"
    assert job.error.code == code_pb2.PERMISSION_DENIED


async def test_invalid_names_fail_at_once_without_asking_a_dns_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6761: .invalid never resolves, so no query leaves for it (the loop's
    resolver is replaced by one that fails the test if it is asked)."""

    async def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise AssertionError(f"a DNS lookup was made for {args!r}")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    for name in (NOWHERE, "invalid", "a.b.invalid"):
        with pytest.raises(socket.gaierror):
            await resolve_with_loop(name, 80)
