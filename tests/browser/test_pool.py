"""The browser pool: isolation between jobs, crashes, recycling, the context cap,
and nothing left behind (processes, profile and scratch directories)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from conveyor.artifacts import LocalArtifactStore
from conveyor.kinds.errors import JobError
from conveyor.processes import pid_alive, process_start_time, process_table, read_process
from conveyor.v1 import job_pb2
from executor.browser.browser_dirs import MARKER_FILE, SCRATCH_PREFIX, scratch_root
from executor.browser.pool import EXTRA_DISABLED_FEATURES, BrowserPool, playwright_disabled_features
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from executor.browser.url_policy import Decision, UrlPolicy
from tests.browser.helpers import browser_task, make_settings, new_job_id, run_steps, values_of

PoolFactory = Callable[..., BrowserPool]


@pytest.fixture
async def make_pool(tmp_path: Path) -> AsyncIterator[PoolFactory]:
    """Pools of a test's own (closed at the end even if the test fails)."""
    made: list[BrowserPool] = []

    def make(**overrides: Any) -> BrowserPool:
        settings = make_settings(tmp_path, **overrides)
        pool = BrowserPool(settings, run_dir=tmp_path / "browsers")
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


def start_stuck_job(runner: BrowserTaskRunner, pages_url: str) -> tuple[asyncio.Task[job_pb2.JobResult], asyncio.Event]:
    """A job that waits 30 s in its second step for an element its page never shows,
    and the event set once it is in that step."""
    in_long_step = asyncio.Event()

    async def report(progress: int, message: str, step_index: int, step_name: str) -> None:
        if step_index == 1:
            in_long_step.set()

    task = browser_task(
        [
            {"navigate": {"url": f"{pages_url}/late.html?delay=60000"}},
            {"timeout": "30s", "wait": {"target": {"selector": "#late"}}},
        ]
    )
    return asyncio.create_task(runner.run(new_job_id(), task, report)), in_long_step


def runner_for(pool: BrowserPool, tmp_path: Path) -> BrowserTaskRunner:
    return BrowserTaskRunner(pool, LocalArtifactStore(tmp_path / "artifacts"), pool.settings)


def scratch_dirs_of(pool_run_dir: Path) -> list[Path]:
    """Scratch dirs (in the system temp dir) whose marker names this run dir."""
    found = []
    for entry in scratch_root().iterdir():
        marker = entry / MARKER_FILE
        if entry.name.startswith(SCRATCH_PREFIX) and marker.is_file():
            try:
                owner = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if owner.get("run_dir") == str(pool_run_dir.resolve()):
                found.append(entry)
    return found


async def test_jobs_in_the_same_browser_share_no_cookies_or_storage(
    make_pool: PoolFactory, tmp_path: Path, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    runner = runner_for(pool, tmp_path)
    storage = f"{pages_url}/storage.html"
    first = await run_steps(
        runner,
        [
            {"navigate": {"url": storage}},
            {"expect": {"target": {"selector": "#seen"}, "textEquals": "cookie=none storage=none"}},
            {"click": {"target": {"selector": "#remember"}}},
            # Within one job the page does see what it stored.
            {"navigate": {"url": storage}},
            {"extract": {"target": {"selector": "#seen"}, "key": "seen"}},
        ],
    )
    assert values_of(first) == {"seen": "cookie=visitor=ada storage=ada"}

    # A second job, while another job's context with the cookie is still open.
    async with pool.context() as other:
        await other.page.goto(storage)
        await other.page.click("#remember")
        second = await run_steps(
            runner, [{"navigate": {"url": storage}}, {"extract": {"target": {"selector": "#seen"}, "key": "seen"}}]
        )
    assert values_of(second) == {"seen": "cookie=none storage=none"}
    assert pool.launches == 1  # all of it in one browser


async def wait_for_spare(pool: BrowserPool, count: int, timeout: float = 10.0) -> None:
    """Poll the pool's stats (it has no event for this), bounded by `timeout`."""
    async with asyncio.timeout(timeout):
        while pool.stats().spare_pages != count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_the_next_job_gets_a_page_opened_ahead_that_never_served(
    make_pool: PoolFactory, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    storage = f"{pages_url}/storage.html"
    async with pool.context() as first:
        await first.page.goto(storage)
        await first.page.click("#remember")
    await wait_for_spare(pool, 1)  # opened while the first job ran
    async with pool.context() as second:
        assert pool.stats().spare_pages == 0  # the job took it
        assert second.page.url == "about:blank" and await second.context.cookies() == []
        await second.page.goto(storage)
        assert await second.page.text_content("#seen") == "cookie=none storage=none"
    assert pool.launches == 1


async def test_back_to_back_jobs_take_the_spare_and_never_open_two_pages_at_once(
    make_pool: PoolFactory,
) -> None:
    # Back to back, the next job used to open a page of its own beside the spare being
    # opened: two at once, every other job ~1 s slower on 2 cores.
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    opened: list[object] = []
    in_flight = peak = 0
    open_session = pool._open_session

    async def counting_open(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            session = await open_session(*args, **kwargs)
        finally:
            in_flight -= 1
        opened.append(session)
        return session

    pool._open_session = counting_open  # type: ignore[method-assign]
    used = []
    for _ in range(4):
        async with pool.context() as session:  # the next job arrives at once
            used.append(session)
    await wait_for_spare(pool, 1)  # the last one waits for the next job
    assert peak == 1  # never two pages being opened at once
    assert used[0] is opened[0] and used[1:] == opened[1:4]  # each job after the first: a spare
    assert len(opened) == 5  # the first job's own page and one spare after each job, no more


async def test_jobs_arriving_while_the_first_browser_starts_wait_for_their_slot(
    make_pool: PoolFactory,
) -> None:
    # They used to launch a second browser each (up to MAX_CONCURRENT_BROWSERS) and run
    # beside the first job although there was one browser slot.
    pool = make_pool(max_concurrent_browsers=2, browser_slots=1)
    await pool.start()
    most = 0

    async def job() -> None:
        nonlocal most
        async with pool.context():
            most = max(most, pool.open_contexts())
            await asyncio.sleep(0.05)

    opened = 0
    open_session = pool._open_session

    async def counting_open(*args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return await open_session(*args, **kwargs)

    pool._open_session = counting_open  # type: ignore[method-assign]
    await asyncio.gather(*(job() for _ in range(3)))
    assert (pool.launches, most) == (1, 1)
    # The jobs that waited for the slot took the spare opened after the job before.
    await wait_for_spare(pool, 1)
    assert opened == 4  # the first job's page and a spare after each job


async def test_chromium_gets_one_disable_features_with_playwrights_and_ours(make_pool: PoolFactory) -> None:
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    async with pool.context():
        pass
    (pid,) = pool.browser_main_pids()
    cmdline = (await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)).decode().split("\0")
    switches = [arg for arg in cmdline if arg.startswith("--disable-features=")]
    assert len(switches) == 1, switches  # Chromium reads only the last one
    features = set(switches[0].split("=", 1)[1].split(","))
    assert playwright_disabled_features()  # read from the installed driver
    assert set(playwright_disabled_features()) <= features
    assert set(EXTRA_DISABLED_FEATURES) <= features


async def test_a_job_with_a_form_makes_no_connection_of_chromiums_own(
    make_pool: PoolFactory, tmp_path: Path, pages_url: str
) -> None:
    # Autofill asked content-autofill.googleapis.com about every form, twice a job.
    asked: list[tuple[str, int]] = []
    check_host = UrlPolicy.check_host

    async def recording(self: UrlPolicy, host: str, port: int) -> Decision:
        asked.append((host, port))
        return await check_host(self, host, port)

    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    runner = runner_for(pool, tmp_path)
    UrlPolicy.check_host = recording  # type: ignore[method-assign]
    try:
        for _ in range(3):
            await run_steps(runner, [
                {"navigate": {"url": f"{pages_url}/form.html"}},
                {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
                {"click": {"target": {"selector": "#submit"}}},
                {"expect": {"target": {"selector": "#out"}, "textEquals": "Hello Ada"}},
            ])
    finally:
        UrlPolicy.check_host = check_host  # type: ignore[method-assign]
    others = [(host, port) for host, port in asked if host != "127.0.0.1"]
    assert others == [] and asked, asked


async def test_no_page_is_opened_ahead_when_prewarm_is_off_or_the_browser_retires(make_pool: PoolFactory) -> None:
    for pool in (make_pool(prewarm_pages=False), make_pool(browser_recycle_after=1)):
        await pool.start()
        for _ in range(2):
            async with pool.context():
                pass
            stats = pool.stats()  # a spare would be on its way once the job ended
            assert (stats.spare_pages, stats.spares_being_opened) == (0, 0)


async def test_killed_browser_fails_the_job_retryably_and_is_relaunched(
    make_pool: PoolFactory, tmp_path: Path, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    runner = runner_for(pool, tmp_path)
    job, in_long_step = start_stuck_job(runner, pages_url)
    async with asyncio.timeout(20):
        await in_long_step.wait()
        (main_pid,) = pool.browser_main_pids()
        first_pids = pool.chromium_pids()
        assert main_pid in first_pids and len(first_pids) > 1
        os.kill(main_pid, signal.SIGKILL)
        with pytest.raises(BrowserTaskFailed) as caught:
            await job
    error = caught.value
    assert (error.reason, error.retryable, error.code) == ("BROWSER_CRASHED", True, code_pb2.UNAVAILABLE)
    assert error.message.startswith("steps[1] 'wait #late' (wait '#late'): the browser crashed")
    assert pool.crashes == 1

    # The next job gets a new browser; the dead one's processes and dirs are gone.
    result = await run_steps(
        runner, [{"navigate": {"url": f"{pages_url}/form.html"}}, {"expect": {"titleContains": "Form"}}]
    )
    assert len(result.steps) == 2
    assert pool.launches == 2
    assert pool.browser_main_pids() != [main_pid]
    assert not [pid for pid in first_pids if pid_alive(pid)]
    assert len(list((tmp_path / "browsers").iterdir())) == 1


async def test_many_jobs_leave_no_processes_or_directories(
    make_pool: PoolFactory, tmp_path: Path, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=2, contexts_per_browser=2, browser_recycle_after=3)
    await pool.start()
    runner = runner_for(pool, tmp_path)
    seen_pids: set[int] = set()
    steps: list[dict[str, Any]] = [
        {"navigate": {"url": f"{pages_url}/list.html"}},
        {"extract": {"target": {"selector": "li.item"}, "key": "names", "all": True}},
    ]

    async def one_job() -> None:
        result = await run_steps(runner, steps)
        assert values_of(result)["names"] == ["Apple", "Banana", "Cherry"]
        seen_pids.update(pool.chromium_pids())

    for _ in range(4):
        await asyncio.gather(*(one_job() for _ in range(4)))
    assert pool.launches >= 5  # 16 contexts, recycled every 3
    assert pool.stats().open_contexts == 0
    await pool.close()
    assert seen_pids
    assert not [pid for pid in seen_pids if pid_alive(pid)]
    assert list((tmp_path / "browsers").iterdir()) == []
    assert scratch_dirs_of(tmp_path / "browsers") == []


async def test_recycled_browser_is_closed_after_its_last_context(
    make_pool: PoolFactory, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=1, browser_recycle_after=2)
    await pool.start()
    pids: list[list[int]] = []
    for _ in range(3):
        async with pool.context() as session:
            await session.page.goto(f"{pages_url}/form.html")
            pids.append(pool.browser_main_pids())
    assert pids[0] == pids[1] != pids[2]
    assert pool.launches == 2
    assert not pid_alive(pids[0][0])


async def test_contexts_per_browser_is_a_cap(make_pool: PoolFactory) -> None:
    pool = make_pool(max_concurrent_browsers=1, contexts_per_browser=1)
    await pool.start()
    second_in = asyncio.Event()
    release_second = asyncio.Event()

    async def second() -> None:
        async with pool.context():
            second_in.set()
            await release_second.wait()

    async with pool.context():
        waiter = asyncio.create_task(second())
        # The second job waits for room while the first holds the only slot.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await second_in.wait()
        assert pool.stats().open_contexts == 1
    async with asyncio.timeout(10):
        await second_in.wait()
        assert pool.stats().open_contexts == 1
        release_second.set()
        await waiter
    assert pool.launches == 1


async def test_start_removes_only_its_own_leftovers(make_pool: PoolFactory, tmp_path: Path) -> None:
    run_dir = tmp_path / "browsers"
    run_dir.mkdir()
    # A process that has exited: the "earlier run" that left things behind.
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    dead_owner = {"pid": dead.pid, "start_time": 1}
    me = {"pid": os.getpid(), "start_time": process_start_time(os.getpid())}

    def marked(name: str, owner: dict[str, Any], scratch_name: str) -> tuple[Path, Path]:
        root, scratch = run_dir.resolve() / name, scratch_root() / scratch_name
        marker = json.dumps({**owner, "run_dir": str(run_dir.resolve()), "root": str(root), "scratch": str(scratch)})
        for made in (root, scratch):
            made.mkdir()
            (made / MARKER_FILE).write_text(marker)
        return root, scratch

    token = os.urandom(6).hex()
    left_root, left_scratch = marked(f"browser-{token}1", dead_owner, f"{SCRATCH_PREFIX}{token}1")
    live_root, live_scratch = marked(f"browser-{token}2", me, f"{SCRATCH_PREFIX}{token}2")
    unmarked = run_dir / f"browser-{token}3"
    unmarked.mkdir()
    # A process still running from the leftover directory (by its command line).
    straggler = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)", f"{left_root}/profile"
    )
    try:
        pool = make_pool()
        await pool.start()
        async with asyncio.timeout(10):
            assert await straggler.wait() == -signal.SIGKILL
        assert not left_root.exists() and not left_scratch.exists()
        assert live_root.exists() and live_scratch.exists() and unmarked.exists()
    finally:
        if straggler.returncode is None:
            straggler.kill()
            await straggler.wait()
        for path in (live_root, live_scratch):
            for child in path.iterdir():
                child.unlink()
            path.rmdir()


async def test_dead_playwright_driver_is_restarted(
    make_pool: PoolFactory, tmp_path: Path, pages_url: str
) -> None:
    pool = make_pool(max_concurrent_browsers=1)
    await pool.start()
    runner = runner_for(pool, tmp_path)
    job, in_long_step = start_stuck_job(runner, pages_url)
    async with asyncio.timeout(20):
        await in_long_step.wait()
        (main_pid,) = pool.browser_main_pids()
        browser = read_process(main_pid)
        assert browser is not None
        driver = read_process(browser.ppid)
        assert driver is not None and "run-driver" in driver.cmdline
        old_pids = pool.chromium_pids()
        os.kill(driver.pid, signal.SIGKILL)  # the node process Playwright talks to
        with pytest.raises(BrowserTaskFailed) as caught:
            await job
    assert (caught.value.reason, caught.value.retryable) == ("BROWSER_CRASHED", True)

    result = await run_steps(runner, [{"navigate": {"url": f"{pages_url}/form.html"}}])
    assert len(result.steps) == 1
    assert pool.driver_restarts == 1 and pool.launches == 2
    await pool.close()
    assert not [pid for pid in old_pids if pid_alive(pid)]
    assert list((tmp_path / "browsers").iterdir()) == []


async def test_launch_timeout_and_failure_leave_nothing_behind(make_pool: PoolFactory, tmp_path: Path) -> None:
    hanging = tmp_path / "hanging-chromium"
    hanging.write_text("#!/bin/sh\nsleep 60\n")
    hanging.chmod(0o755)
    pool = make_pool(chromium_path=str(hanging), browser_launch_timeout_seconds=1.0)
    await pool.start()
    with pytest.raises(JobError) as caught:
        async with pool.context():
            pass
    assert (caught.value.reason, caught.value.retryable) == ("BROWSER_LAUNCH_TIMEOUT", True)
    assert pool.chromium_pids() == []
    assert list((tmp_path / "browsers").iterdir()) == []
    assert scratch_dirs_of(tmp_path / "browsers") == []
    # Nothing of the script is still running (it named its profile dir, our marker).
    assert not [p for p in process_table() if p.alive and str(tmp_path / "browsers") in p.cmdline]

    missing = make_pool(chromium_path=str(tmp_path / "no-such-chromium"))
    await missing.start()
    with pytest.raises(JobError) as caught:
        async with missing.context():
            pass
    assert (caught.value.reason, caught.value.retryable) == ("BROWSER_LAUNCH_FAILED", True)
