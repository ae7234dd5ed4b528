"""The URL policy inside one browser context, at the level of requests.

The context's SOCKS proxy (policy_proxy.py) enforces the job's `UrlPolicy` on every
connection the context opens (redirect hops, re-resolved names, workers and
websockets included) and tells the guard which host and port it refused;
`RequestGuard` turns that into URLs: each request that then fails at the proxy
(`requestfailed`), and each websocket to such a host that closes, is a refused one.
Navigation steps check the policy before they go (actions.navigate).

Requests are not routed through Playwright (`context.route`): that added a round
trip through this process to every request (and switched Chromium's HTTP cache
off), and it saw only the first request of a redirect chain anyway -- the proxy
is what enforces the policy.

A refused request of the job's page's main frame is a policy violation that fails
the job (`violation`, `violated`); any other refused request is aborted and listed
in `blocked_urls`.

A host that does not resolve is no policy matter: its request is aborted as the
network error it is (`namenotresolved`; "host unreachable" from the proxy), a
navigation of the job's page to it fails the step with a retryable HOST_NOT_RESOLVED
naming the host (`unresolved_navigation`), and sub-resources of such hosts are not
listed in `blocked_urls` (which lists policy refusals only).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from google.rpc import code_pb2
from playwright.async_api import BrowserContext, Page, Request, WebSocket
from playwright.async_api import Error as PlaywrightError

from conveyor.kinds.errors import JobError
from executor.browser.url_policy import Decision, UrlPolicy, normalize_host, split_url

log = structlog.get_logger()

MAX_BLOCKED_URLS = 200
MAX_URL_CHARS = 2048
PROXY_FAILURES = ("ERR_SOCKS_CONNECTION_FAILED", "ERR_PROXY_CONNECTION_FAILED", "ERR_TUNNEL")
#: How long a step that failed at the proxy waits to hear why (await_verdict_for).
VERDICT_WAIT_SECONDS = 1.0


def host_not_resolved(url: str, host: str, reason: str) -> JobError:
    """A navigation whose host did not resolve: a network error, tried again."""
    return JobError(
        f"navigation to {url[:MAX_URL_CHARS]} failed: the host {host} could not be resolved"
        + (f" ({reason})" if reason else ""),
        code=code_pb2.UNAVAILABLE,
        reason="HOST_NOT_RESOLVED",
        retryable=True,
        metadata={"url": url[:MAX_URL_CHARS], "host": host, "resolve_error": reason[:300]},
    )


def policy_violation(url: str, reason: str) -> JobError:
    return JobError(
        f"navigation to {url[:MAX_URL_CHARS]} refused by the URL policy: {reason}",
        code=code_pb2.PERMISSION_DENIED,
        reason="URL_POLICY_VIOLATION",
        retryable=False,
        metadata={"url": url[:MAX_URL_CHARS], "policy_reason": reason},
    )


class RequestGuard:
    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy
        self.blocked_urls: list[str] = []
        self.violation: JobError | None = None
        self.violated = asyncio.Event()
        self.page: Page | None = None
        self._proxy_refusals: dict[tuple[str, int], Decision] = {}
        self._proxy_unresolved: dict[tuple[str, int], Decision] = {}
        #: The last navigation of the job's page that failed because its host did
        #: not resolve (the step that made it fails with this error).
        self.unresolved_navigation: JobError | None = None
        self._unresolved_seen = asyncio.Event()

    async def navigation_verdict(self) -> None:
        """Wait until a navigation of the page was refused, or found its host
        unresolved (for a navigation that failed at the proxy)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self.violated, self._unresolved_seen)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def await_verdict_for(self, error: BaseException) -> None:
        """A step failed with a navigation error of the proxy's making: wait (briefly)
        for the `requestfailed` event that says whether the policy refused the page's
        navigation, or its host did not resolve -- it may trail the error."""
        if self.violation is not None or self.unresolved_navigation is not None:
            return
        if not any(marker in str(error) for marker in PROXY_FAILURES):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(VERDICT_WAIT_SECONDS):
                await self.navigation_verdict()

    def clear_unresolved(self) -> None:
        """Forget an earlier step's unresolved navigation."""
        self.unresolved_navigation = None
        self._unresolved_seen.clear()

    def watch_page(self, page: Page) -> None:
        """The job's page: a refused main-frame navigation of it fails the job."""
        self.page = page

    async def install(self, context: BrowserContext) -> None:
        context.on("requestfailed", self._on_request_failed)
        context.on("page", self._watch_page_websockets)
        for page in context.pages:
            self._watch_page_websockets(page)

    def on_proxy_refused(self, host: str, port: int, decision: Decision) -> None:
        self._proxy_refusals[(normalize_host(host), port)] = decision

    def on_proxy_unresolved(self, host: str, port: int, decision: Decision) -> None:
        self._proxy_unresolved[(normalize_host(host), port)] = decision

    # --- handlers -----------------------------------------------------------------------

    def _watch_page_websockets(self, page: Page) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, websocket: WebSocket) -> None:
        """A websocket the proxy refused closes at once: list it when it does."""
        url = websocket.url

        def closed(_: object) -> None:
            decision = self._proxy_decision(url, self._proxy_refusals)
            if decision is not None:
                self._record_blocked(url, decision.reason)
            elif self._proxy_decision(url, self._proxy_unresolved) is not None:
                log.info("websocket_host_not_resolved", url=url[:300])

        websocket.on("close", closed)
        websocket.on("socketerror", closed)

    @staticmethod
    def _proxy_decision(url: str, decisions: dict[tuple[str, int], Decision]) -> Decision | None:
        parts = split_url(url)
        if parts is None:
            return None
        _scheme, host, port = parts
        return decisions.get((normalize_host(host), port))

    def _on_request_failed(self, request: Request) -> None:
        failure = request.failure or ""
        if not any(marker in failure for marker in PROXY_FAILURES):
            return
        parts = split_url(request.url)
        if parts is None:
            return
        _scheme, host, port = parts
        key = (normalize_host(host), port)
        decision = self._proxy_refusals.get(key)
        if decision is not None:
            self._refused(request, decision.reason)
            return
        unresolved = self._proxy_unresolved.get(key)
        if unresolved is not None:
            self._not_resolved(request, unresolved)

    # --- bookkeeping ----------------------------------------------------------------------

    def _refused(self, request: Request, reason: str) -> None:
        if self._is_job_navigation(request):
            if self.violation is None:
                self.violation = policy_violation(request.url, reason)
                self.violated.set()
            log.warning("url_policy_refused_navigation", url=request.url[:300], reason=reason)
        else:
            self._record_blocked(request.url, reason)

    def _not_resolved(self, request: Request, decision: Decision) -> None:
        parts = split_url(request.url)
        host = decision.host or (normalize_host(parts[1]) if parts else "")
        if self._is_job_navigation(request):
            self.unresolved_navigation = host_not_resolved(request.url, host, decision.reason)
            self._unresolved_seen.set()
            log.info("navigation_host_not_resolved", url=request.url[:300], host=host, reason=decision.reason)
        else:
            log.info("request_host_not_resolved", url=request.url[:300], host=host, reason=decision.reason)

    def _record_blocked(self, url: str, reason: str) -> None:
        url = url[:MAX_URL_CHARS]
        if url not in self.blocked_urls and len(self.blocked_urls) < MAX_BLOCKED_URLS:
            self.blocked_urls.append(url)
        log.info("url_policy_blocked_request", url=url[:300], reason=reason)

    def _is_job_navigation(self, request: Request) -> bool:
        with contextlib.suppress(PlaywrightError):
            if not request.is_navigation_request():
                return False
            frame = request.frame
            if frame.parent_frame is not None:
                return False
            return self.page is None or frame.page == self.page
        return False
