"""Per-browser directories under the pool's run dir: `browser-<token>/` holding the
profile (`profile/`), a scratch HOME and TMPDIR (`home/`, `tmp/`), and a marker file
naming the process that created it. The marker is how a later run recognises its own
leftovers: a marked directory whose creator is gone is removed (after killing, by
pid, any process still running from it). Unmarked directories are never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog

from executor.browser.processes import browser_processes, kill_pids, process_start_time

MARKER_FILE = ".conveyor-browser"
DIR_PREFIX = "browser-"

log = structlog.get_logger()


@dataclass(frozen=True)
class BrowserDir:
    root: Path

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

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
        shutil.rmtree(self.root, ignore_errors=True)


def _owner() -> dict[str, int | None]:
    pid = os.getpid()
    return {"pid": pid, "start_time": process_start_time(pid)}


def create_browser_dir(run_dir: Path) -> BrowserDir:
    run_dir.mkdir(parents=True, exist_ok=True)
    root = run_dir / f"{DIR_PREFIX}{secrets.token_hex(8)}"
    root.mkdir(mode=0o700)
    (root / MARKER_FILE).write_text(json.dumps(_owner()))
    made = BrowserDir(root)
    for sub in (made.profile, made.home, made.tmp):
        sub.mkdir(mode=0o700)
    return made


def _owner_is_alive(marker_path: Path) -> bool:
    try:
        owner = json.loads(marker_path.read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    started = process_start_time(pid)
    return started is not None and started == owner.get("start_time")


def sweep_leftovers(run_dir: Path) -> list[Path]:
    """Remove marked browser dirs whose creating process is gone (earlier runs of
    this executor), killing by pid any process still running from them."""
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    for entry in sorted(run_dir.iterdir()):
        marker_path = entry / MARKER_FILE
        if not (entry.name.startswith(DIR_PREFIX) and entry.is_dir() and marker_path.is_file()):
            continue
        if _owner_is_alive(marker_path):
            continue
        leftover = BrowserDir(entry)
        pids = [p.pid for p in browser_processes(None, leftover.marker)]
        if pids:
            log.warning("browser_leftover_processes_killed", dir=str(entry), pids=pids)
            kill_pids(pids)
        leftover.remove()
        removed.append(entry)
    if removed:
        log.info("browser_leftovers_removed", count=len(removed), run_dir=str(run_dir))
    return removed
