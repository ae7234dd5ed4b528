"""Per-browser directories: `browser-<token>/` under the pool's run dir holds the
profile (`profile/`) and a scratch HOME (`home/`); the browser's TMPDIR is a short
`cvb-<token>/` in the system temp dir, because Chromium puts a unix socket there and
socket paths are limited to 107 bytes. Both carry a marker file naming the process
that created them and the run dir they belong to. The marker is how a later run
recognises its own leftovers: a marked directory whose creator is gone is removed
(after killing, by pid, any process still running from it). Unmarked directories are
never touched.

The sweep never fails on what is not ours: the temp dir is shared, and may hold
another user's `cvb-*` directory we cannot even look into (PermissionError), a file
or a dangling symlink by that name, a marker that is a directory or not JSON, or a
directory that vanishes while we look. Each such entry is skipped, left in place, and
logged once per process (`browser_dir_skipped`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
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


def scratch_root(override: Path | None = None) -> Path:
    """Where browsers' TMPDIRs go: short paths (/tmp when there is one), unless
    configured (CONVEYOR_BROWSER_SCRATCH_DIR)."""
    if override is not None:
        return Path(override).resolve()
    tmp = Path("/tmp")
    return tmp if tmp.is_dir() and os.access(tmp, os.W_OK) else Path(tempfile.gettempdir())


# Entries already reported as skipped by this process: a sweep runs at every start of
# a pool, and a stranger's directory stays where it is.
_reported: set[tuple[str, str]] = set()


def _skip(entry: Path, why: str, error: BaseException | None = None) -> None:
    key = (str(entry), why)
    if key in _reported:
        return
    _reported.add(key)
    # Another user's entry is normal in a shared temp dir; one we could not read is not.
    emit = log.info if error is None else log.warning
    emit(
        "browser_dir_skipped", path=str(entry), why=why,
        error=f"{type(error).__name__}: {error}" if error is not None else None,
    )


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


def create_browser_dir(run_dir: Path, scratch_dir: Path | None = None) -> BrowserDir:
    run_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    root = run_dir.resolve() / f"{DIR_PREFIX}{token}"
    scratch_base = scratch_root(scratch_dir)
    scratch_base.mkdir(parents=True, exist_ok=True)
    scratch = scratch_base / f"{SCRATCH_PREFIX}{token}"
    marker = _marker(run_dir, root, scratch)
    for made in (root, scratch):
        made.mkdir(mode=0o700)
        (made / MARKER_FILE).write_text(marker)
    browser_dir = BrowserDir(root, scratch)
    for sub in (browser_dir.profile, browser_dir.home):
        sub.mkdir(mode=0o700)
    return browser_dir


def _read_marker(marker_path: Path) -> dict[str, Any] | None:
    """The marker's JSON object, or None when it is not one (garbage, not UTF-8).
    OSError (unreadable, vanished, a directory) is the caller's to handle."""
    try:
        owner = json.loads(marker_path.read_bytes())
    except (ValueError, RecursionError):
        return None
    return owner if isinstance(owner, dict) else None


def _owner_is_alive(owner: dict[str, Any]) -> bool:
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    started = process_start_time(pid)
    return started is not None and started == owner.get("start_time")


def _candidates(directory: Path, prefix: str) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(e.path) for e in entries if e.name.startswith(prefix)]
    except OSError as error:
        _skip(directory, "cannot list the directory", error)
        return []


def _leftover_of(entry: Path, run_dir: Path, scratch_base: Path) -> BrowserDir | None:
    """The browser dir `entry` belongs to if it is a leftover of ours (marked for this
    run dir, by a process that is gone, owned by us); None otherwise. Raises OSError
    for an entry that cannot be looked at."""
    info = entry.lstat()
    if not stat.S_ISDIR(info.st_mode):
        _skip(entry, "not a directory (a file or a symlink)")
        return None
    if info.st_uid != os.getuid():
        _skip(entry, f"owned by uid {info.st_uid}, not us")
        return None
    marker_path = entry / MARKER_FILE
    try:
        marker_info = marker_path.lstat()
    except FileNotFoundError:
        return None  # unmarked: never ours to touch
    if not stat.S_ISREG(marker_info.st_mode):
        _skip(entry, "its marker is not a regular file")
        return None
    owner = _read_marker(marker_path)
    if owner is None:
        _skip(entry, "its marker is not a JSON object")
        return None
    if owner.get("run_dir") != str(run_dir) or _owner_is_alive(owner):
        return None
    root, scratch = Path(str(owner.get("root"))), Path(str(owner.get("scratch")))
    # Only ever the two places this module creates, and only our own files.
    if entry not in (root, scratch):
        return None
    if not (root.parent == run_dir and root.name.startswith(DIR_PREFIX)):
        return None
    if not (scratch.parent == scratch_base and scratch.name.startswith(SCRATCH_PREFIX)):
        return None
    return BrowserDir(root, scratch)


def _leftovers(run_dir: Path, scratch_dir: Path | None = None) -> list[BrowserDir]:
    """Marked browser dirs of this run dir whose creating process is gone."""
    found: dict[Path, BrowserDir] = {}
    mine = run_dir.resolve()
    scratch_base = scratch_root(scratch_dir)
    candidates = _candidates(mine, DIR_PREFIX)
    if scratch_base.is_dir():
        candidates += _candidates(scratch_base, SCRATCH_PREFIX)
    for entry in candidates:
        try:
            leftover = _leftover_of(entry, mine, scratch_base)
        except FileNotFoundError:
            continue  # vanished while we looked: nothing left to sweep
        except OSError as error:  # PermissionError above all: another user's
            _skip(entry, "cannot be looked into", error)
            continue
        if leftover is not None:
            found.setdefault(leftover.root, leftover)
    return list(found.values())


def sweep_leftovers(run_dir: Path, scratch_dir: Path | None = None) -> list[Path]:
    """Remove marked browser dirs whose creating process is gone (earlier runs of
    this executor), killing by pid any process still running from them. Whatever is
    not ours, or cannot be looked at, is skipped and logged once."""
    if not run_dir.is_dir():
        return []
    removed: list[Path] = []
    for leftover in _leftovers(run_dir, scratch_dir):
        try:
            pids = [p.pid for p in browser_processes(None, leftover.marker)]
            pids += [p.pid for p in browser_processes(None, f"{leftover.scratch}{os.sep}")]
            if pids:
                log.warning("browser_leftover_processes_killed", dir=str(leftover.root), pids=pids)
                kill_pids(sorted(set(pids)))
            leftover.remove()
        except OSError as error:
            _skip(leftover.root, "could not be removed", error)
            continue
        removed.append(leftover.root)
    if removed:
        log.info("browser_leftovers_removed", count=len(removed), run_dir=str(run_dir))
    return removed
