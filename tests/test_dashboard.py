"""The web dashboard in real Chromium (Playwright, /usr/bin/chromium) against a real
gateway (auth on) and executor: it loads with no console errors; a job submitted by
the test appears in the jobs list and its progress shows live on its page; cancel
and retry from the page work; a viewer key sees no action buttons and no other
tenant's jobs, and the server refuses its actions anyway.

With CONVEYOR_DASHBOARD_SCREENSHOTS=DIR the page screenshots go to DIR (how
docs/dashboard/*.png are made); otherwise to the test's temporary directory."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.settings import Settings
from conveyor.v1 import job_pb2, key_service_pb2
from conveyor_client import AsyncConveyorClient
from gateway.dashboard.app import Dashboard, DashboardBindingError
from tests.support.processes import Stack, free_port, stack_env

ADMIN = "cvk_dashboard-test-admin"
PAGES = Path(__file__).resolve().parent / "pages"
WAIT_MS = 20_000


@dataclass
class World:
    stack: Stack
    url: str
    pages: str
    keys: dict[str, str] = field(default_factory=dict)  # acme-viewer, acme-submitter, globex-submitter

    def client(self, key: str = ADMIN) -> AsyncConveyorClient:
        return AsyncConveyorClient(self.stack.grpc_target, api_key=key)


@pytest.fixture(scope="module")
def pages_url() -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGES))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def world(redis_url: str, pages_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    data = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = stack_env(redis_url, data, CONVEYOR_AUTH="on", CONVEYOR_ADMIN_KEY=ADMIN,
                    CONVEYOR_DASHBOARD_ADDR=f"127.0.0.1:{port}")
    stack = Stack(redis_url, env, data / "logs")
    try:
        stack.start_gateway()
        stack.start_executor()
        w = World(stack, f"http://127.0.0.1:{port}", pages_url)
        async with w.client() as admin:
            for name, tenant, role in (("acme-viewer", "acme", key_service_pb2.ROLE_VIEWER),
                                       ("acme-submitter", "acme", key_service_pb2.ROLE_SUBMITTER),
                                       ("globex-submitter", "globex", key_service_pb2.ROLE_SUBMITTER)):
                w.keys[name] = (await admin.create_key(tenant, role, name)).secret
            await admin.create_schedule({"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "name": "nightly-report",
                                         "template": {"queue": "reports", "noop": {"sleep": "0.1s"}}})
        yield w
    finally:
        stack.print_problems()
        stack.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium")
        yield b
        await b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("CONVEYOR_DASHBOARD_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Session:
    """A browser context logged in with one key, collecting console errors."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context, self.page = context, page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))


async def login(browser: Browser, w: World, key: str) -> Session:
    context = await browser.new_context(viewport={"width": 1360, "height": 860})
    s = Session(context, await context.new_page())
    await s.page.goto(w.url + "/")
    await s.page.fill("#api-key", key)
    await s.page.click("form.login button[type=submit]")
    await s.page.wait_for_selector("#nav:not([hidden])", timeout=WAIT_MS)
    await s.page.wait_for_selector("#live.on", timeout=WAIT_MS)
    return s


async def goto(s: Session, hash_: str) -> None:
    await s.page.evaluate("h => { location.hash = h }", hash_)


async def state_of(w: World, job_id: str) -> int:
    async with w.client() as c:
        return (await c.get(job_id)).state


def test_dashboard_beyond_loopback_needs_auth() -> None:
    settings = Settings(auth="off", dashboard_addr="0.0.0.0:8090")
    with pytest.raises(DashboardBindingError, match="without auth"):
        Dashboard(settings, guard=None, servicers={}).check_binding()  # type: ignore[arg-type]
    Dashboard(Settings(auth="on", dashboard_addr="0.0.0.0:8090"), None, {}).check_binding()  # type: ignore[arg-type]
    Dashboard(Settings(auth="off", dashboard_addr="127.0.0.1:8090"), None, {}).check_binding()  # type: ignore[arg-type]


async def test_a_job_appears_and_its_progress_shows_live(world: World, browser: Browser, shots: Path) -> None:
    s = await login(browser, world, ADMIN)
    page = s.page
    await page.wait_for_selector("#queues tbody tr[data-queue=reports], #queues tbody tr", timeout=WAIT_MS)
    await goto(s, "#/jobs")
    await page.wait_for_selector("#jobs", timeout=WAIT_MS)
    steps = [{"navigate": {"url": f"{world.pages}/form.html"}},
             {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
             {"wait": {"duration": "1s"}, "name": "pause one"},
             {"click": {"target": {"selector": "#submit"}}},
             {"wait": {"duration": "1s"}, "name": "pause two"},
             {"screenshot": {"fullPage": True}},
             {"extract": {"target": {"selector": "#out"}, "key": "greeting"}}]
    async with world.client() as admin:
        # The test follows the job itself, to know when each event happened.
        seen_by_test: list[tuple[float, int]] = []
        submitted = await admin.submit({"queue": "web", "browser": {"steps": steps}, "labels": {"team": "docs"}})
        job_id = submitted.id
        # The new job shows in the list (queue `web` did not exist when the page opened).
        await page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"]', timeout=WAIT_MS)
        await goto(s, f"#/job/{job_id}")
        await page.wait_for_selector("#job-progress", timeout=WAIT_MS)
        # Every rendering of the job's progress, with the page's clock.
        await page.evaluate("""() => {
            window.__progress = [];
            const note = () => { const el = document.getElementById('job-progress');
              const v = el ? Number(el.dataset.progress) : null; const last = window.__progress.at(-1);
              if (v !== null && (!last || last[1] !== v)) window.__progress.push([Date.now(), v]); };
            note();
            new MutationObserver(note).observe(document.getElementById('main'), {subtree: true, childList: true});
        }""")
        async for message in admin.watch(job_id):
            if message.HasField("event"):
                seen_by_test.append((time.time() * 1000, message.event.progress))
        await page.wait_for_selector("#job-state [data-state=COMPLETED]", timeout=WAIT_MS)
    rendered: list[list[float]] = await page.evaluate("window.__progress")
    # Each progress value that stood for a while (the waits) shows on the page within a second of its event.
    latencies = []
    for i, (at, value) in enumerate(seen_by_test):
        later = [t for t, v in seen_by_test[i + 1:] if v != value]
        if value in (0, 100) or not later or later[0] - at < 800:
            continue
        shown = [t for t, v in rendered if v == value]
        assert shown, f"progress {value}% never shown; rendered {rendered}, events {seen_by_test}"
        latencies.append(min(abs(t - at) for t in shown))
    assert len(latencies) >= 2, (seen_by_test, rendered)
    print(f"dashboard progress latency after the test's own WatchJob, ms: {sorted(round(x) for x in latencies)}")
    assert max(latencies) < 1000, latencies
    # The job's page: steps with durations and outcomes, the screenshot, the extracted value, the attempt.
    step_rows = page.locator("#steps tbody tr")
    assert await step_rows.count() == len(steps)
    assert "OK" in await step_rows.nth(2).inner_text()
    assert "pause one" in await step_rows.nth(2).inner_text()
    img = page.locator("#artifacts img")
    await img.first.wait_for(timeout=WAIT_MS)
    await page.wait_for_function("() => { const i = document.querySelector('#artifacts img'); "
                                 "return i && i.complete && i.naturalWidth > 0 }", timeout=WAIT_MS)
    assert "Hello Ada" in await page.inner_text("main")
    assert await page.locator("#attempts tbody tr").count() == 1
    await page.screenshot(path=str(shots / "job.png"), full_page=True)
    await goto(s, "#/jobs")
    await page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"] [data-state=COMPLETED]', timeout=WAIT_MS)
    # Filters: by label, and by a state it is not in.
    await goto(s, "#/jobs?label=team%3Ddocs")
    await page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"]', timeout=WAIT_MS)
    await goto(s, "#/jobs?state=failed&queue=web")
    await page.wait_for_selector("#jobs tbody td.muted", timeout=WAIT_MS)
    assert await page.locator(f'#jobs tr[data-job-id="{job_id}"]').count() == 0
    await goto(s, "#/queues")
    await page.wait_for_selector("#queues tr[data-queue=web] [data-count=completed]", timeout=WAIT_MS)
    # The counts follow the jobs live: 8 that complete and 2 that fail in a queue of their own.
    async with world.client() as admin:
        await admin.submit_many([{"queue": "batch", "noop": {"sleep": "0.2s"}}] * 8 + [
            {"queue": "batch", "maxAttempts": 1, "noop": {"failFirstAttempts": 1}}] * 2)
    for queue, count, value in (("web", "completed", 1), ("batch", "completed", 8), ("batch", "failed", 2)):
        await page.wait_for_function(
            "([q, c, v]) => { const el = document.querySelector(`#queues tr[data-queue=${q}] [data-count=${c}]`);"
            " return el && el.textContent === String(v) }", arg=[queue, count, value], timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "queues.png"), full_page=True)
    await goto(s, "#/jobs")
    try:
        await page.wait_for_function("() => document.querySelectorAll('#jobs tr[data-job-id]').length === 11",
                                     timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        # (Seen once in a fresh clone on a loaded machine, not since: say what the page showed.)
        shown = await page.evaluate("() => document.getElementById('main').innerText")
        raise AssertionError(f"the jobs page did not list the 11 jobs; it showed:\n{shown}") from None
    await page.screenshot(path=str(shots / "jobs.png"))
    await goto(s, "#/workers")
    await page.wait_for_selector("#workers tbody tr[data-worker]", timeout=WAIT_MS)
    # Its running jobs follow the heartbeats, live: all of them have ended.
    await page.wait_for_function("() => document.querySelectorAll('#workers tr[data-worker] a').length === 0",
                                 timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "workers.png"))
    await goto(s, "#/schedules")
    await page.wait_for_selector("#schedules tbody tr[data-schedule]", timeout=WAIT_MS)
    assert "nightly-report" in await page.inner_text("#schedules")
    await page.screenshot(path=str(shots / "schedules.png"))
    assert s.errors == []
    await s.context.close()


async def test_cancel_and_retry_from_the_page(world: World, browser: Browser) -> None:
    s = await login(browser, world, world.keys["acme-submitter"])
    async with world.client(world.keys["acme-submitter"]) as acme:
        job_id = (await acme.submit({"queue": "web", "noop": {"sleep": "60s"}})).id
        await goto(s, f"#/job/{job_id}")
        await s.page.click("button[data-action=cancel]", timeout=WAIT_MS)
        await s.page.wait_for_selector("#job-state [data-state=CANCELLED]", timeout=WAIT_MS)
        assert await state_of(world, job_id) == job_pb2.JOB_STATE_CANCELLED
        await s.page.click("button[data-action=retry]", timeout=WAIT_MS)
        await s.page.wait_for_selector("#job-state [data-state=WAITING], #job-state [data-state=ACTIVE]",
                                       timeout=WAIT_MS)
        job = await acme.get(job_id)
        assert job.state in (job_pb2.JOB_STATE_WAITING, job_pb2.JOB_STATE_ACTIVE)
        # From the list too: its row's cancel button.
        await goto(s, "#/jobs?queue=web")
        await s.page.click(f'#jobs tr[data-job-id="{job_id}"] button[data-action=cancel]', timeout=WAIT_MS)
        await s.page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"] [data-state=CANCELLED]', timeout=WAIT_MS)
        assert await state_of(world, job_id) == job_pb2.JOB_STATE_CANCELLED
        # A submitter may not administer queues: no such buttons.
        await goto(s, "#/queues")
        await s.page.wait_for_selector("#queues tr[data-queue=web]", timeout=WAIT_MS)
        assert await s.page.locator("#queues button[data-action]").count() == 0
    assert s.errors == []
    await s.context.close()


async def test_a_viewer_sees_no_actions_and_no_other_tenants_jobs(world: World, browser: Browser) -> None:
    async with world.client(world.keys["acme-submitter"]) as acme, \
            world.client(world.keys["globex-submitter"]) as globex:
        own = (await acme.submit({"queue": "shared", "noop": {"sleep": "30s"}})).id
        other = (await globex.submit({"queue": "shared", "noop": {"sleep": "30s"}})).id
        s = await login(browser, world, world.keys["acme-viewer"])
        page = s.page
        await goto(s, "#/jobs?queue=shared")
        await page.wait_for_selector(f'#jobs tr[data-job-id="{own}"]', timeout=WAIT_MS)
        # Live too: globex's next job never shows; acme's does.
        other_late = (await globex.submit({"queue": "shared", "noop": {"sleep": "30s"}})).id
        own_late = (await acme.submit({"queue": "shared", "noop": {"sleep": "30s"}})).id
        await page.wait_for_selector(f'#jobs tr[data-job-id="{own_late}"]', timeout=WAIT_MS)
        listed = await page.inner_text("#jobs")
        assert other not in listed and other_late not in listed
        assert await page.locator("button[data-action]").count() == 0
        await goto(s, f"#/job/{own}")
        await page.wait_for_selector("#job-state", timeout=WAIT_MS)
        assert await page.locator("button[data-action]").count() == 0
        await goto(s, "#/queues")
        await page.wait_for_selector("#queues tr[data-queue=shared]", timeout=WAIT_MS)
        assert await page.locator("button[data-action]").count() == 0
        await goto(s, "#/workers")
        await page.wait_for_selector("text=Workers are shown to admins", timeout=WAIT_MS)
        assert s.errors == []
        # Another tenant's job does not exist for it, page or API (the browser logs that 404, nothing else).
        await goto(s, f"#/job/{other}")
        await page.wait_for_selector("#job-missing", timeout=WAIT_MS)
        assert "not found" in (await page.inner_text("#job-missing")).lower()
        assert all("404 (Not Found)" in e for e in s.errors), s.errors
        api = s.context.request  # the page's cookie, no page console involved
        header = {"X-Conveyor-Dashboard": "1"}
        refused = await api.post(f"{world.url}/api/jobs/{own}/cancel", headers=header)
        assert refused.status == 403 and (await refused.json())["error"]["reason"] == "ROLE_TOO_LOW"
        refused = await api.post(f"{world.url}/api/queues/shared/pause", headers=header)
        assert refused.status == 403
        missing = await api.get(f"{world.url}/api/jobs/{other}")
        assert missing.status == 404
        artifact = await api.get(f"{world.url}/api/jobs/{other}/artifacts/x.png")
        assert artifact.status == 404
        # Without the dashboard's header an action is refused before anything (no cross-site forms).
        forged = await api.post(f"{world.url}/api/jobs/{own}/cancel")
        assert forged.status == 403 and (await forged.json())["error"]["reason"] == "DASHBOARD_HEADER_MISSING"
        await s.context.close()
        for job_id in (own, own_late):
            await acme.cancel(job_id)
        for job_id in (other, other_late):
            await globex.cancel(job_id)
    assert await state_of(world, own) == job_pb2.JOB_STATE_CANCELLED


async def test_without_a_key_nothing_but_the_login(world: World, browser: Browser) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(world.url + "/")
    await page.wait_for_selector("#api-key", timeout=WAIT_MS)
    assert await page.locator("#nav").is_hidden()
    await page.fill("#api-key", "cvk_not-a-key")
    await page.click("form.login button[type=submit]")
    await page.wait_for_selector("form.login .error:text('unknown or revoked')", timeout=WAIT_MS)
    for path in ("/api/queues", "/api/jobs", "/api/stream", "/api/workers"):
        got = await context.request.get(world.url + path)
        assert got.status == 401, path
    await context.close()
    assert [e for e in errors if "401" not in e] == []


async def test_with_auth_off_there_is_no_login(redis_url: str, browser: Browser,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("dashboard-open")
    port = free_port()
    stack = Stack(redis_url, stack_env(redis_url, data, CONVEYOR_DASHBOARD_ADDR=f"127.0.0.1:{port}"), data / "logs")
    try:
        stack.start_gateway()  # auth off (the test stacks' default), on loopback
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_selector("#nav:not([hidden])", timeout=WAIT_MS)
        assert await page.locator("#api-key").count() == 0
        assert await page.inner_text("#who") == "auth off"
        await page.wait_for_selector("#live.on", timeout=WAIT_MS)
        await context.close()
        assert errors == []
    finally:
        stack.stop()
