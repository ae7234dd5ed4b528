"""The URL policy inside one browser context, at the level of requests.

`RequestGuard` routes every request of the context (`context.route("**/*")`) and
every websocket (`context.route_web_socket`) through the job's `UrlPolicy`; the
context's SOCKS proxy (policy_proxy.py) enforces the same policy on each connection
and tells the guard which host it refused, so that a request failing there (a
redirect hop, say) is reported by URL too.

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
from playwright.async_api import BrowserContext, Page, Request, Route, WebSocketRoute
from playwright.async_api import Error as PlaywrightError

from conveyor.kinds.errors import JobError
from executor.browser.url_policy import Decision, UrlPolicy, normalize_host, split_url

log = structlog.get_logger()

MAX_BLOCKED_URLS = 200
MAX_URL_CHARS = 2048
PROXY_FAILURES = ("ERR_SOCKS_CONNECTION_FAILED", "ERR_PROXY_CONNECTION_FAILED", "ERR_TUNNEL")


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

    def clear_unresolved(self) -> None:
        """Forget an earlier step's unresolved navigation."""
        self.unresolved_navigation = None
        self._unresolved_seen.clear()

    def watch_page(self, page: Page) -> None:
        """The job's page: a refused main-frame navigation of it fails the job."""
        self.page = page

    async def install(self, context: BrowserContext) -> None:
        await context.route("**/*", self._on_route)
        await context.route_web_socket("**/*", self._on_websocket)
        context.on("requestfailed", self._on_request_failed)

    def on_proxy_refused(self, host: str, port: int, decision: Decision) -> None:
        self._proxy_refusals[(normalize_host(host), port)] = decision

    def on_proxy_unresolved(self, host: str, port: int, decision: Decision) -> None:
        self._proxy_unresolved[(normalize_host(host), port)] = decision

    # --- handlers -----------------------------------------------------------------------

    async def _decide(self, url: str, *, websocket: bool = False) -> Decision:
        try:
            return await self.policy.check_url(url, websocket=websocket)
        except Exception as exc:  # a check that breaks refuses
            log.exception("url_policy_check_failed", url=url[:300])
            return Decision(False, f"the URL could not be checked ({type(exc).__name__})")

    async def _on_route(self, route: Route, request: Request) -> None:
        try:
            decision = await self._decide(request.url)
            if decision.allowed:
                await route.continue_()
                return
            if decision.unresolved:
                self._not_resolved(request, decision)
                await route.abort("namenotresolved")
                return
            self._refused(request, decision.reason)
            await route.abort("blockedbyclient")
        except PlaywrightError:
            # The page or context closed while the request was pending.
            pass

    async def _on_websocket(self, websocket: WebSocketRoute) -> None:
        try:
            decision = await self._decide(websocket.url, websocket=True)
            if decision.allowed:
                websocket.connect_to_server()
                return
            if decision.unresolved:
                log.info("websocket_host_not_resolved", url=websocket.url[:300], reason=decision.reason)
                await websocket.close(code=1011, reason="host not resolved")
                return
            self._record_blocked(websocket.url, decision.reason)
            await websocket.close(code=1008, reason="refused by the URL policy")
        except PlaywrightError:
            pass

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
