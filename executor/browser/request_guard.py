"""The URL policy inside one browser context, at the level of requests.

`RequestGuard` routes every request of the context (`context.route("**/*")`) and
every websocket (`context.route_web_socket`) through the job's `UrlPolicy`; the
context's SOCKS proxy (policy_proxy.py) enforces the same policy on each connection
and tells the guard which host it refused, so that a request failing there (a
redirect hop, say) is reported by URL too.

A refused request of the job's page's main frame is a policy violation that fails
the job (`violation`, `violated`); any other refused request is aborted and listed
in `blocked_urls`.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from google.rpc import code_pb2
from playwright.async_api import BrowserContext, Page, Request, Route, WebSocketRoute
from playwright.async_api import Error as PlaywrightError

from executor.browser.url_policy import Decision, UrlPolicy, normalize_host, split_url
from executor.errors import JobError

log = structlog.get_logger()

MAX_BLOCKED_URLS = 200
MAX_URL_CHARS = 2048
PROXY_FAILURES = ("ERR_SOCKS_CONNECTION_FAILED", "ERR_PROXY_CONNECTION_FAILED", "ERR_TUNNEL")


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

    def watch_page(self, page: Page) -> None:
        """The job's page: a refused main-frame navigation of it fails the job."""
        self.page = page

    async def install(self, context: BrowserContext) -> None:
        await context.route("**/*", self._on_route)
        await context.route_web_socket("**/*", self._on_websocket)
        context.on("requestfailed", self._on_request_failed)

    def on_proxy_refused(self, host: str, port: int, decision: Decision) -> None:
        self._proxy_refusals[(normalize_host(host), port)] = decision

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
        decision = self._proxy_refusals.get((normalize_host(host), port))
        if decision is not None:
            self._refused(request, decision.reason)

    # --- bookkeeping ----------------------------------------------------------------------

    def _refused(self, request: Request, reason: str) -> None:
        if self._is_job_navigation(request):
            if self.violation is None:
                self.violation = policy_violation(request.url, reason)
                self.violated.set()
            log.warning("url_policy_refused_navigation", url=request.url[:300], reason=reason)
        else:
            self._record_blocked(request.url, reason)

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
