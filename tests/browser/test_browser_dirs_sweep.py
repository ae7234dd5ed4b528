"""The sweep of leftover browser directories never dies on what is not ours.

The temp dir is shared: it may hold another user's `cvb-*` directory that we cannot
look into, a file or a dangling symlink by that name, a marker that is a directory or
garbage. Each is skipped, left in place and logged once; an executor with such
entries in its scratch dir runs jobs.

We run as root, for whom permission bits stop nothing: the PermissionError is caused
for real by a child process that drops to uid/gid 65534 (after its imports) and
sweeps a directory of root's with mode 0700."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conveyor.v1 import job_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from executor.browser import browser_dirs
from executor.browser.browser_dirs import MARKER_FILE, SCRATCH_PREFIX, sweep_leftovers
from tests.support.grpc_helpers import submit_request, wait_state
from tests.support.processes import ROOT, Stack

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory under /tmp that uid 65534 can traverse (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="conveyor-sweep-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def marker(run_dir: Path, root: Path, scratch: Path, pid: int) -> str:
    return json.dumps({"pid": pid, "start_time": 1, "run_dir": str(run_dir.resolve()),
                       "root": str(root), "scratch": str(scratch)})


AS_NOBODY = """
import json, os, sys
from pathlib import Path
from conveyor.logs import configure_logging
from executor.browser.browser_dirs import sweep_leftovers
configure_logging("INFO", "json", service="executor")
os.setgroups([])
os.setresgid({uid}, {uid}, {uid})
os.setresuid({uid}, {uid}, {uid})
run_dir, scratch = Path(sys.argv[1]), Path(sys.argv[2])
first = sweep_leftovers(run_dir, scratch)
second = sweep_leftovers(run_dir, scratch)
print(json.dumps({{"uid": os.getuid(), "first": [str(p) for p in first], "second": [str(p) for p in second]}}))
"""


def test_a_directory_we_may_not_read_is_skipped_for_real(shared_tmp: Path) -> None:
    run_dir, scratch = shared_tmp / "run", shared_tmp / "scratch"
    for made in (run_dir, scratch):
        made.mkdir()
        os.chown(made, NOBODY, NOBODY)
    # Root's own scratch dir, mode 0700: uid 65534 cannot even stat what is inside.
    forbidden = scratch / f"{SCRATCH_PREFIX}{os.urandom(6).hex()}"
    forbidden.mkdir(mode=0o700)
    (forbidden / MARKER_FILE).write_text(marker(run_dir, run_dir / "browser-x", forbidden, dead_pid()))
    # The sweeping user's own directory, mode 0: its owner may not look inside either.
    locked = scratch / f"{SCRATCH_PREFIX}{os.urandom(6).hex()}"
    locked.mkdir()
    (locked / MARKER_FILE).write_text(marker(run_dir, run_dir / "browser-w", locked, dead_pid()))
    os.chown(locked, NOBODY, NOBODY)
    locked.chmod(0)
    # And a real leftover of the sweeping user's own, which must still be swept.
    token = os.urandom(6).hex()
    left_root, left_scratch = run_dir / f"browser-{token}", scratch / f"{SCRATCH_PREFIX}{token}"
    text = marker(run_dir, left_root.resolve(), left_scratch.resolve(), dead_pid())
    for made in (left_root, left_scratch):
        made.mkdir()
        (made / MARKER_FILE).write_text(text)
        os.chown(made, NOBODY, NOBODY)
        os.chown(made / MARKER_FILE, NOBODY, NOBODY)

    done = subprocess.run(
        [sys.executable, "-c", AS_NOBODY.format(uid=NOBODY), str(run_dir), str(scratch)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    outcome = json.loads(done.stdout.splitlines()[-1])
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    assert outcome["uid"] == NOBODY
    assert outcome["first"] == [str(left_root.resolve())] and outcome["second"] == []
    assert not left_root.exists() and not left_scratch.exists()
    skipped = [ln for ln in lines if ln.get("event") == "browser_dir_skipped"]
    by_path = {ln["path"]: ln for ln in skipped}
    assert len(skipped) == 2 and set(by_path) == {str(forbidden), str(locked)}, skipped  # two sweeps, one line each
    assert "owned by uid 0" in by_path[str(forbidden)]["why"]
    assert "PermissionError" in by_path[str(locked)]["error"]
    assert forbidden.is_dir() and (forbidden / MARKER_FILE).is_file()
    assert locked.is_dir() and (locked / MARKER_FILE).is_file()


def weird_entries(run_dir: Path, scratch: Path) -> dict[str, Path]:
    """Entries the sweep must leave alone, each of a different kind."""
    def name() -> Path:
        return scratch / f"{SCRATCH_PREFIX}{os.urandom(6).hex()}"

    made: dict[str, Path] = {}
    made["a file"] = name()
    made["a file"].write_text("not a directory")
    made["a dangling symlink"] = name()
    made["a dangling symlink"].symlink_to(scratch / "nowhere")
    made["a marker that is a directory"] = name()
    (made["a marker that is a directory"] / MARKER_FILE).mkdir(parents=True)
    made["a garbage marker"] = name()
    made["a garbage marker"].mkdir()
    (made["a garbage marker"] / MARKER_FILE).write_bytes(b"\xff{not json")
    other = name()
    other.mkdir(mode=0o700)
    (other / MARKER_FILE).write_text(marker(run_dir, run_dir / "browser-y", other, dead_pid()))
    os.chown(other, NOBODY, NOBODY)
    made["another user's directory"] = other
    return made


def test_odd_entries_are_left_in_place_and_logged_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    run_dir.mkdir()
    scratch.mkdir()
    made = weird_entries(run_dir, scratch)
    browser_dirs._reported.clear()
    assert sweep_leftovers(run_dir, scratch) == []
    assert sweep_leftovers(run_dir, scratch) == []
    out = capsys.readouterr().out
    for what, entry in made.items():
        assert os.path.lexists(entry), what
        assert out.count(str(entry)) == 1, (what, out)


def test_a_directory_vanishing_mid_sweep_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE for a race we cannot time for real: the directory is really removed, by a
    wrapper of the marker reader, between listing it and reading its marker."""
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    run_dir.mkdir()
    scratch.mkdir()
    entry = scratch / f"{SCRATCH_PREFIX}{os.urandom(6).hex()}"
    entry.mkdir()
    (entry / MARKER_FILE).write_text(marker(run_dir, run_dir / "browser-z", entry, dead_pid()))
    real_read = browser_dirs._read_marker

    def vanishing(path: Path) -> dict[str, Any] | None:
        shutil.rmtree(path.parent)
        return real_read(path)

    monkeypatch.setattr(browser_dirs, "_read_marker", vanishing)
    assert sweep_leftovers(run_dir, scratch) == []
    assert not entry.exists()


async def test_an_executor_with_odd_entries_in_its_scratch_dir_runs_jobs(
    make_stack: Callable[..., Stack], tmp_path: Path, pages_url: str, shared_tmp: Path
) -> None:
    scratch = shared_tmp  # short: Chromium puts a unix socket (<= 107 bytes) in there
    data = tmp_path / "stack0"  # make_stack's first data dir
    made = weird_entries(data / "browsers", scratch)
    s = make_stack(CONVEYOR_BROWSER_SCRATCH_DIR=str(scratch))
    s.start_gateway()
    executor = s.start_executor()
    async with grpc.aio.insecure_channel(s.grpc_target) as ch:
        jobs = JobServiceStub(ch)
        for _ in range(2):
            sub = await jobs.SubmitJob(submit_request({
                "maxAttempts": 1,
                "browser": {"steps": [
                    {"navigate": {"url": f"{pages_url}/form.html"}},
                    {"extract": {"target": {"selector": "h1, #name"}, "key": "x", "attribute": "id"}},
                ]},
            }))
            job = await wait_state(jobs, sub.id, {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED}, 60)
            assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
    log = executor.log()
    assert "worker died" not in log and "Traceback" not in log
    for what, entry in made.items():
        assert entry.is_symlink() or entry.exists(), what
        skipped = [line for line in log.splitlines() if "browser_dir_skipped" in line and str(entry) in line]
        assert len(skipped) == 1, (what, skipped)
