"""Per-browser directories: `browser-<token>/` under the pool's run dir holds the
profile (`profile/`) and a scratch HOME (`home/`); the browser's TMPDIR is a short
`cvb-<token>/` in the system temp dir, because Chromium puts a unix socket there and
socket paths are limited to 107 bytes. Both carry a marker file naming the process
that created them and the run dir they belong to. The marker is how a later run
recognises its own leftovers: a marked directory whose creator is gone is removed
(after killing, by pid, any process still running from it). Unmarked directories are
never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from conveyor.processes import browser_processes, kill_pids, process_start_time

MARKER_FILE = ".conveyor-browser"
DIR_PREFIX = "browser-"
SCRATCH_PREFIX = "cvb-"

log = structlog.get_logger()


def scratch_root() -> Path:
    """Where browsers' TMPDIRs go: short paths (/tmp when there is one)."""
    tmp = Path("/tmp")
    return tmp if tmp.is_dir() and os.access(tmp, os.W_OK) else Path(tempfile.gettempdir())


@dataclass(frozen=True)
class BrowserDir:
    root: Path
    scratch: Path

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.scratch

    @property
    def marker(self) -> str:
        """A string found in the command line of every process of this browser."""
        return f"{self.root}{os.sep}"

    def env(self) -> dict[str, str | float | bool]:
        """The browser's environment: the executor's, with HOME and temp dirs inside."""
        return {
            **os.environ,
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
        }

    def remove(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _marker(run_dir: Path, root: Path, scratch: Path) -> str:
    pid = os.getpid()
    return json.dumps(
        {
            "pid": pid,
            "start_time": process_start_time(pid),
            "run_dir": str(run_dir.resolve()),
            "root": str(root),
            "scratch": str(scratch),
        }
    )


def create_browser_dir(run_dir: Path) -> BrowserDir:
    run_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    root = run_dir.resolve() / f"{DIR_PREFIX}{token}"
    scratch = scratch_root() / f"{SCRATCH_PREFIX}{token}"
    marker = _marker(run_dir, root, scratch)
    for made in (root, scratch):
        made.mkdir(mode=0o700)
        (made / MARKER_FILE).write_text(marker)
    browser_dir = BrowserDir(root, scratch)
    for sub in (browser_dir.profile, browser_dir.home):
        sub.mkdir(mode=0o700)
    return browser_dir


def _read_marker(marker_path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _owner_is_alive(owner: dict[str, Any]) -> bool:
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    started = process_start_time(pid)
    return started is not None and started == owner.get("start_time")


def _leftovers(run_dir: Path) -> list[BrowserDir]:
    """Marked browser dirs of this run dir whose creating process is gone."""
    found: dict[Path, BrowserDir] = {}
    mine = str(run_dir.resolve())
    candidates = [e for e in run_dir.iterdir() if e.name.startswith(DIR_PREFIX)]
    candidates += [e for e in scratch_root().iterdir() if e.name.startswith(SCRATCH_PREFIX)]
    for entry in candidates:
        marker_path = entry / MARKER_FILE
        if entry.is_symlink() or not marker_path.is_file():
            continue
        owner = _read_marker(marker_path)
        if owner is None or owner.get("run_dir") != mine or _owner_is_alive(owner):
            continue
        root, scratch = Path(str(owner.get("root"))), Path(str(owner.get("scratch")))
        # Only ever the two places this module creates, and only our own files.
        if entry not in (root, scratch) or entry.stat().st_uid != os.getuid():
            continue
        if not (root.parent == run_dir.resolve() and root.name.startswith(DIR_PREFIX)):
            continue
        if not (scratch.parent == scratch_root() and scratch.name.startswith(SCRATCH_PREFIX)):
            continue
        found.setdefault(root, BrowserDir(root, scratch))
    return list(found.values())


def sweep_leftovers(run_dir: Path) -> list[Path]:
    """Remove marked browser dirs whose creating process is gone (earlier runs of
    this executor), killing by pid any process still running from them."""
    if not run_dir.is_dir():
        return []
    removed: list[Path] = []
    for leftover in _leftovers(run_dir):
        pids = [p.pid for p in browser_processes(None, leftover.marker)]
        pids += [p.pid for p in browser_processes(None, f"{leftover.scratch}{os.sep}")]
        if pids:
            log.warning("browser_leftover_processes_killed", dir=str(leftover.root), pids=pids)
            kill_pids(sorted(set(pids)))
        leftover.remove()
        removed.append(leftover.root)
    if removed:
        log.info("browser_leftovers_removed", count=len(removed), run_dir=str(run_dir))
    return removed
