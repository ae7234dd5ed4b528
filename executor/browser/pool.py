"""The browser pool: a few long-lived Chromium processes, a fresh context per job.

- Up to `max_concurrent_browsers` browsers, launched lazily (a new one only when
  every running one is busy), each with its own profile and scratch directory under
  the pool's run dir, removed after it closes. `start()` removes the leftovers of
  earlier runs (marked directories whose creator is gone; see browser_dirs.py).
- `async with pool.context() as session:` gives a fresh `BrowserContext` and page
  (service workers blocked, downloads off, the URL policy installed through a
  per-context SOCKS proxy and request routing) on the least-loaded browser, at most
  `contexts_per_browser` at once per browser and `browser_slots` in all (callers
  wait for room: an executor may run more light jobs than browser jobs). The context is
  closed in `finally`, on cancellation too.
- A browser is recycled after `browser_recycle_after` contexts, and relaunched when
  it crashes or disconnects: the sessions it carried see `session.lost` and their
  jobs fail with a retryable BROWSER_CRASHED error.
- Processes are tracked by pid (`chromium_pids()`), killed only by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from google.rpc import code_pb2
from playwright.async_api import Browser, BrowserContext, Playwright, ProxySettings, async_playwright
from playwright.async_api import Error as PlaywrightError

from conveyor.kinds.errors import JobError
from conveyor.processes import (
    browser_processes,
    find_main_pid,
    kill_pids,
    pid_alive,
    process_table,
    read_process,
)
from conveyor.settings import Settings
from executor.browser.browser_dirs import BrowserDir, create_browser_dir, sweep_leftovers
from executor.browser.policy_proxy import PolicyProxy
from executor.browser.request_guard import RequestGuard
from executor.browser.session import BrowserSession, browser_crashed
from executor.browser.url_policy import Decision, UrlPolicy, direct_hosts

log = structlog.get_logger()

# Flags that keep Chromium quiet on the network and small in memory. Every context
# also gets its own policy proxy; the browser-level proxy refuses everything, so
# nothing the browser does on its own (updates, safe browsing...) leaves it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-pings",
    "--disable-quic",
    "--dns-prefetch-disable",
    "--metrics-recording-only",
    # WebRTC only through the proxy (which speaks no UDP): no STUN packets to anywhere.
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    # --disable-features: see chromium_launch_options() (Chromium reads only the last
    # one, and Playwright passes its own list).
]
#: Features Chromium should not run at all for jobs, besides Playwright's own list.
#: AutofillServerCommunication queried content-autofill.googleapis.com about every
#: form, twice a job (through the job's proxy, which could not resolve it: a DNS
#: timeout each); the others would call Google about pages too.
#: SpareRendererForSitePerProcess started a third renderer process per context (a
#: spare for the next navigation, which a one-page job never makes): 2 instead of 3
#: per context measured ~13% less browser CPU and ~30% less wall time a context
#: (new page, load, one fill) on this 2-core host.
EXTRA_DISABLED_FEATURES = (
    "SpareRendererForSitePerProcess",
    "AutofillServerCommunication",
    "Translate",
    "OptimizationHintsFetching",
    "OptimizationGuideModelDownloading",
    "InterestFeedContentSuggestions",
    "CertificateTransparencyComponentUpdater",
    "DialMediaRouteProvider",
    "GlobalMediaControls",
)
_PLAYWRIGHT_FEATURES = re.compile(r"disabledFeatures\s*=\s*\[(.*?)\]", re.DOTALL)
PROCESS_EXIT_WAIT_SECONDS = 3.0


@functools.cache
def playwright_disabled_features() -> tuple[str, ...]:
    """The features Playwright's driver switches off in Chromium (its one
    `--disable-features`), read from the installed driver; empty if not found."""
    try:
        from playwright._impl._driver import compute_driver_executable

        lib = Path(compute_driver_executable()[1]).parent / "lib"
        sources = [lib / "coreBundle.js", lib / "server" / "chromium" / "chromiumSwitches.js"]
        for source in sources:
            if source.is_file():
                found = _PLAYWRIGHT_FEATURES.search(source.read_text(errors="replace"))
                if found:
                    body = re.sub(r"//[^\n]*", "", found.group(1))
                    return tuple(re.findall(r'"([A-Za-z0-9_-]+)"', body))
    except Exception:  # an unexpected driver layout: fall back to Playwright's list alone
        log.warning("playwright_features_not_found", exc_info=True)
    return ()


def chromium_launch_options() -> dict[str, Any]:
    """`args` and `ignore_default_args` for launching the pool's browsers: CHROMIUM_ARGS,
    and one --disable-features with Playwright's features and EXTRA_DISABLED_FEATURES
    (in place of Playwright's own, which would otherwise be the one Chromium reads)."""
    ours = playwright_disabled_features()
    if not ours:
        return {"args": list(CHROMIUM_ARGS)}
    merged = list(dict.fromkeys([*ours, *EXTRA_DISABLED_FEATURES]))
    return {
        "args": [*CHROMIUM_ARGS, "--disable-features=" + ",".join(merged)],
        "ignore_default_args": ["--disable-features=" + ",".join(ours)],
    }


class _RefuseAll(UrlPolicy):
    """The browser-level proxy's policy: the browser itself reaches nothing."""

    async def check_host(self, host: str, port: int) -> Decision:
        return Decision(False, "browser-level traffic is not allowed", host)


@dataclass(eq=False)
class _PooledBrowser:
    dir: BrowserDir
    persistent: BrowserContext | None = None
    browser: Browser | None = None
    pid: int | None = None
    open: int = 0
    served: int = 0
    ready: bool = False
    retiring: bool = False
    closing: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: set[BrowserSession] = field(default_factory=set)
    # A pristine context and page opened ahead for the next job (prewarm_pages).
    spare: BrowserSession | None = None
    preparing_spare: bool = False
    # Set when the spare being opened is ready (or failed): a job arriving meanwhile
    # waits for it rather than opening a second page beside it.
    spare_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.dir.root.name

    @property
    def usable(self) -> bool:
        return self.ready and not (self.retiring or self.closing or self.gone.is_set())


@dataclass(frozen=True)
class PoolStats:
    browsers: int
    open_contexts: int
    launches: int
    crashes: int
    spare_pages: int = 0
    spares_being_opened: int = 0


def _unavailable(message: str, reason: str = "BROWSER_UNAVAILABLE") -> JobError:
    return JobError(message, code=code_pb2.UNAVAILABLE, reason=reason, retryable=True)


class BrowserPool:
    def __init__(
        self, settings: Settings, *, run_dir: Path, playwright: Playwright | None = None
    ) -> None:
        self.settings = settings
        self.run_dir = Path(run_dir)
        self._playwright = playwright
        self._owns_playwright = playwright is None
        self._browsers: list[_PooledBrowser] = []
        self._cond = asyncio.Condition()
        self._background: set[asyncio.Task[None]] = set()
        self._deny_proxy = PolicyProxy(_RefuseAll(), refusal_log_level=logging.DEBUG)
        self._started = False
        self._closed = False
        self.launches = 0
        self.crashes = 0
        self.recycles = 0  # browsers retired for having served browser_recycle_after contexts
        self.driver_restarts = 0
        self._driver_pid: int | None = None
        self._driver_lock = asyncio.Lock()

    # --- life -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.to_thread(sweep_leftovers, self.run_dir, self.settings.browser_scratch_dir)
        except Exception:
            # Tidying up after earlier runs is never a reason not to run jobs.
            log.exception("browser_leftover_sweep_failed", run_dir=str(self.run_dir))
        await self._deny_proxy.start()
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        self._started = True
        log.info("browser_pool_started", run_dir=str(self.run_dir),
                 max_browsers=self.settings.max_concurrent_browsers)

    async def close(self) -> None:
        """Close every browser (killing by pid whatever outlives the close), remove
        their directories, and stop Playwright."""
        if self._closed:
            return
        self._closed = True
        async with self._cond:
            self._cond.notify_all()
        browsers = list(self._browsers)
        await asyncio.gather(*(self._shut_down(b) for b in browsers), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._deny_proxy.close()
        if self._playwright is not None and self._owns_playwright:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None
        log.info("browser_pool_closed", launches=self.launches, crashes=self.crashes)

    async def __aenter__(self) -> BrowserPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what callers use ----------------------------------------------------------------

    @asynccontextmanager
    async def context(self, options: dict[str, Any] | None = None) -> AsyncIterator[BrowserSession]:
        """A fresh context and page for one job, closed when the block ends.
        `options`: more keyword arguments of browser.new_context (a task's viewport,
        device, locale...); a context with options is never the spare one."""
        if not self._started:
            raise RuntimeError("BrowserPool.start() was not called")
        pooled = await self._acquire()
        session: BrowserSession | None = None
        try:
            spare = None if options else await self._take_spare(pooled)
            session = spare or await self._open_session(pooled, options)
            yield session
        finally:
            if session is not None:
                await _shielded(self._close_session(pooled, session))
            # After the job, not during it: opening the spare beside a running job made
            # the job slower and cost more CPU in all than it saved (measured again for
            # issue 13 item 7, same run, 3 rounds at queue concurrency 1: suite 22.6-23.9 s
            # and 43-46 CPU-s opened during the job, vs 20.3-21.3 s and 37-39 CPU-s after).
            # Before the slot is given back: a job waiting for it then finds the spare
            # on its way and waits for it, instead of opening a page beside it.
            self._prepare_spare(pooled)
            await _shielded(self._release(pooled))

    def chromium_pids(self) -> list[int]:
        """Pids of every live process of the pool's browsers (main processes, their
        children and helpers)."""
        table = process_table()
        pids: set[int] = set()
        for pooled in list(self._browsers):
            pids.update(p.pid for p in browser_processes(pooled.pid, pooled.dir.marker, table))
        return sorted(pids)

    def browser_main_pids(self) -> list[int]:
        """The main process pid of each running browser."""
        return [b.pid for b in self._browsers if b.pid is not None and not b.gone.is_set()]

    def stats(self) -> PoolStats:
        return PoolStats(
            browsers=sum(1 for b in self._browsers if not b.gone.is_set()),
            open_contexts=sum(b.open for b in self._browsers),
            launches=self.launches,
            crashes=self.crashes,
            spare_pages=sum(1 for b in self._browsers if b.spare is not None),
            spares_being_opened=sum(1 for b in self._browsers if b.preparing_spare),
        )

    # --- choosing a browser ----------------------------------------------------------------

    def open_contexts(self) -> int:
        """Jobs' contexts open now (counted against `browser_slots`)."""
        return sum(b.open for b in self._browsers)

    def _live_count(self) -> int:
        return sum(1 for b in self._browsers if not b.gone.is_set())

    def _take(self, pooled: _PooledBrowser) -> _PooledBrowser:
        pooled.open += 1
        pooled.served += 1
        if pooled.served >= self.settings.browser_recycle_after:
            self.recycles += not pooled.retiring
            pooled.retiring = True
        return pooled

    async def _acquire(self) -> _PooledBrowser:
        await self._ensure_driver()
        cap = max(1, self.settings.contexts_per_browser)
        limit = max(1, self.settings.max_concurrent_browsers)
        slots = max(1, self.settings.browser_slots)
        async with self._cond:
            while True:
                if self._closed:
                    raise _unavailable("the browser pool is closed", "BROWSER_POOL_CLOSED")
                if self.open_contexts() >= slots:
                    # Every browser slot is taken: wait for a job to give its page back.
                    await self._cond.wait()
                    continue
                room = [b for b in self._browsers if b.usable and b.open < cap]
                best = min(room, key=lambda b: b.open, default=None)
                can_launch = self._live_count() < limit
                if best is not None and (best.open == 0 or not can_launch):
                    return self._take(best)
                if can_launch:
                    pooled = _PooledBrowser(await asyncio.to_thread(
                        create_browser_dir, self.run_dir, self.settings.browser_scratch_dir
                    ))
                    self._browsers.append(pooled)
                    # The job's slot is taken from now on, not once the browser is up:
                    # jobs arriving meanwhile used to launch a second browser beside it
                    # and run two at once with one browser slot (on 2 cores: two
                    # launches, then jobs spread over two browsers, one of them cold).
                    self._take(pooled)
                    break
                await self._cond.wait()
        try:
            await self._launch(pooled)
        except BaseException:
            await _shielded(self._discard(pooled))
            raise
        async with self._cond:
            pooled.ready = True
            self._cond.notify_all()
        return pooled

    async def _release(self, pooled: _PooledBrowser) -> None:
        async with self._cond:
            pooled.open -= 1
            if pooled.retiring and pooled.open == 0 and not pooled.closing:
                self._spawn(self._shut_down(pooled))
            self._cond.notify_all()

    # --- launching and closing browsers -------------------------------------------------------

    async def _launch(self, pooled: _PooledBrowser) -> None:
        assert self._playwright is not None
        timeout = self.settings.browser_launch_timeout_seconds
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                persistent = await self._playwright.chromium.launch_persistent_context(
                    str(pooled.dir.profile),
                    executable_path=self.settings.chromium_path,
                    headless=True,
                    **chromium_launch_options(),
                    env=pooled.dir.env(),
                    proxy={"server": self._deny_proxy.server_url},
                    service_workers="block",
                    accept_downloads=False,
                    timeout=timeout * 1000,
                )
                pooled.persistent = persistent
                browser = persistent.browser
                if browser is None:
                    raise _unavailable("Playwright gave no browser for the persistent context")
                pooled.browser = browser
                browser.on("disconnected", lambda _: self._on_disconnected(pooled))
                for page in list(persistent.pages):
                    await page.close()
        except TimeoutError:
            raise _unavailable(
                f"Chromium did not start within {timeout:g}s", "BROWSER_LAUNCH_TIMEOUT"
            ) from None
        except PlaywrightError as exc:
            raise _unavailable(
                f"Chromium could not be started: {str(exc).splitlines()[0]}", "BROWSER_LAUNCH_FAILED"
            ) from exc
        pooled.pid = await asyncio.to_thread(find_main_pid, pooled.dir.profile)
        if self._driver_pid is None and pooled.pid is not None:
            self._driver_pid = _driver_pid_of(pooled.pid)
        self.launches += 1
        log.info("browser_launched", browser=pooled.id, pid=pooled.pid,
                 seconds=round(time.monotonic() - started, 3))

    async def _ensure_driver(self) -> None:
        """Restart Playwright's driver (a node process, the browsers' parent) if it
        died: its browsers are gone with it, and it sends no "disconnected" events."""
        if not self._owns_playwright or self._driver_pid is None or pid_alive(self._driver_pid):
            return
        async with self._driver_lock:
            if self._driver_pid is None or pid_alive(self._driver_pid):
                return
            log.error("playwright_driver_died", pid=self._driver_pid)
            for pooled in list(self._browsers):
                if not pooled.gone.is_set():
                    self._on_disconnected(pooled)
            old, self._playwright, self._driver_pid = self._playwright, None, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.stop()
            self._playwright = await async_playwright().start()
            self.driver_restarts += 1

    def _on_disconnected(self, pooled: _PooledBrowser) -> None:
        pooled.gone.set()
        for session in list(pooled.sessions):
            session.mark_lost("the browser process exited")
        if not pooled.closing:
            self.crashes += 1
            log.warning("browser_crashed", browser=pooled.id, pid=pooled.pid,
                        open_contexts=pooled.open)
            self._spawn(self._shut_down(pooled))
        self._spawn(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _shut_down(self, pooled: _PooledBrowser) -> None:
        """Close a browser (gracefully, then by pid), remove its directory, forget it."""
        if pooled.closing:
            return
        pooled.closing = True
        spare, pooled.spare = pooled.spare, None
        if spare is not None:
            await self._close_session(pooled, spare)
        if pooled.persistent is not None and not pooled.gone.is_set():
            try:
                async with asyncio.timeout(self.settings.browser_close_timeout_seconds):
                    await pooled.persistent.close()
            except (TimeoutError, PlaywrightError) as exc:
                log.warning("browser_close_failed", browser=pooled.id, error=str(exc)[:200])
        await self._discard(pooled)
        log.info("browser_closed", browser=pooled.id, pid=pooled.pid, served=pooled.served)

    async def _discard(self, pooled: _PooledBrowser) -> None:
        """Kill what is left of a browser by pid, remove its directory, forget it."""
        pooled.closing = True
        pooled.gone.set()
        spare, pooled.spare = pooled.spare, None
        if spare is not None:
            await self._close_session(pooled, spare)
        await _reap_processes(pooled)
        await asyncio.to_thread(pooled.dir.remove)
        async with self._cond:
            if pooled in self._browsers:
                self._browsers.remove(pooled)
            self._cond.notify_all()

    # --- pages opened ahead -------------------------------------------------------------------

    async def _take_spare(self, pooled: _PooledBrowser) -> BrowserSession | None:
        """The browser's spare session, if one is ready and sound. It has never served a
        job: nothing of another job's cookies, storage or history is in it.

        One being opened is waited for: opening the job's own page beside it would make
        two at once, each slower (on 2 cores, back-to-back jobs alternated between ~0.5 s
        and ~1.5 s that way: one took the spare, the next raced the next spare)."""
        if pooled.preparing_spare:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.browser_new_page_timeout_seconds):
                    await pooled.spare_ready.wait()
        spare, pooled.spare = pooled.spare, None
        if spare is not None and pooled.usable and not spare.lost.is_set():
            return spare
        if spare is not None:
            self._spawn(self._close_session(pooled, spare))
        return None

    def _prepare_spare(self, pooled: _PooledBrowser) -> None:
        """Open the next job's context and page in the background, off its critical
        path: a new context, its policy proxy and a page take ~0.2-0.3 s. At most one
        spare per browser, opened or being opened."""
        if (
            self.settings.prewarm_pages
            and pooled.usable
            and pooled.spare is None
            and not pooled.preparing_spare
            and pooled.served + 1 < self.settings.browser_recycle_after
        ):
            pooled.preparing_spare = True
            pooled.spare_ready.clear()
            self._spawn(self._fill_spare(pooled))

    async def _fill_spare(self, pooled: _PooledBrowser) -> None:
        session: BrowserSession | None = None
        try:
            # Not Playwright's selector engine too (a `:root` count in about:blank): the
            # job's first step navigates, and the new document needs it loaded again.
            session = await self._open_session(pooled)
        except Exception as exc:  # the next job simply opens its own
            log.debug("spare_page_failed", browser=pooled.id, error=str(exc)[:200])
            pooled.preparing_spare = False
            pooled.spare_ready.set()
            if session is not None:
                await self._close_session(pooled, session)
            return
        except BaseException:
            pooled.preparing_spare = False
            pooled.spare_ready.set()
            raise
        pooled.preparing_spare = False
        if pooled.usable and pooled.spare is None and not self._closed:
            pooled.spare = session
            pooled.spare_ready.set()
        else:
            pooled.spare_ready.set()
            await self._close_session(pooled, session)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- one job's context ---------------------------------------------------------------------

    async def _open_session(
        self, pooled: _PooledBrowser, options: dict[str, Any] | None = None
    ) -> BrowserSession:
        assert pooled.browser is not None
        policy = UrlPolicy(self.settings.allowed_hosts)
        guard = RequestGuard(policy)
        proxy = PolicyProxy(policy, on_refused=guard.on_proxy_refused, on_unresolved=guard.on_proxy_unresolved)
        await proxy.start()
        context: BrowserContext | None = None
        timeout = self.settings.browser_new_page_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                context = await pooled.browser.new_context(
                    **{"accept_downloads": False, **(options or {})},
                    service_workers="block",
                    proxy=self._context_proxy(proxy),
                )
                await guard.install(context)
                page = await context.new_page()
        except BaseException as exc:
            if context is not None:
                await _shielded(_close_context(context))
            await proxy.close()
            if isinstance(exc, TimeoutError):
                # A browser that cannot open a page in time is not to be trusted.
                pooled.retiring = True
                raise _unavailable(
                    f"the browser did not open a page within {timeout:g}s", "BROWSER_NEW_PAGE_TIMEOUT"
                ) from None
            if isinstance(exc, PlaywrightError):
                if pooled.gone.is_set():
                    raise browser_crashed("while opening the job's page", browser=pooled.id) from exc
                raise _unavailable(f"the browser could not open a page: {exc}") from exc
            raise
        session = BrowserSession(context, page, guard, pooled.id, proxy=proxy)
        page.on("crash", lambda _: session.mark_lost("the page's renderer crashed"))
        pooled.sessions.add(session)
        if pooled.gone.is_set():
            session.mark_lost("the browser process exited")
        return session

    def _context_proxy(self, proxy: PolicyProxy) -> ProxySettings:
        """A context's proxy: its policy proxy, but for allowed IP literals (direct_hosts)."""
        settings: ProxySettings = {"server": proxy.server_url}
        direct = direct_hosts(self.settings.allowed_hosts)
        if direct:
            settings["bypass"] = ",".join(direct)
        return settings

    async def _close_session(self, pooled: _PooledBrowser, session: BrowserSession) -> None:
        pooled.sessions.discard(session)
        if not pooled.gone.is_set() and not await _close_context(session.context):
            # A browser that cannot close a context is not to be trusted with more.
            pooled.retiring = True
        if session.proxy is not None:
            await session.proxy.close()


def _driver_pid_of(browser_pid: int) -> int | None:
    """The Playwright driver that launched a browser: its parent, if that is one."""
    browser = read_process(browser_pid)
    driver = read_process(browser.ppid) if browser is not None else None
    return driver.pid if driver is not None and "run-driver" in driver.cmdline else None


async def _close_context(context: BrowserContext) -> bool:
    try:
        async with asyncio.timeout(10):
            await context.close()
    except (TimeoutError, PlaywrightError) as exc:
        log.warning("browser_context_close_failed", error=str(exc)[:200])
        return False
    return True


async def _reap_processes(pooled: _PooledBrowser) -> None:
    """Wait a moment for the browser's processes to exit, then SIGKILL the rest by
    pid and wait for them to go."""
    for attempt in range(2):
        deadline = time.monotonic() + PROCESS_EXIT_WAIT_SECONDS
        while True:
            left = await asyncio.to_thread(browser_processes, pooled.pid, pooled.dir.marker)
            if not left:
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        pids = [p.pid for p in left]
        if attempt == 0:
            log.warning("browser_processes_killed", browser=pooled.id, pids=pids)
            kill_pids(pids)
        else:
            log.error("browser_processes_survived", browser=pooled.id, pids=pids)


async def _shielded(coro: Coroutine[Any, Any, object]) -> None:
    """Run clean-up to the end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
