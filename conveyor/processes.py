"""Processes, tracked by pid through /proc (Linux): the executor's Chromium, the
embedded Redis, and the tests' and benches' own children. Nothing here ever looks
processes up by name.

A browser is known by its main pid (the process Playwright launched, which leads its
own process group) and by its own directory, which appears in the command line of
every process it starts (`--user-data-dir=...`, the crash handler's database under
its HOME).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    cmdline: str

    @property
    def alive(self) -> bool:
        return self.state not in {"Z", "X"}


def read_process(pid: int) -> ProcessInfo | None:
    """One process's parent, group, state and command line, or None if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 3:
        return None
    state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
    return ProcessInfo(pid, ppid, pgid, state, raw.replace(b"\0", b" ").decode(errors="replace"))


def process_table() -> list[ProcessInfo]:
    """Every process this user can see, alive or zombie."""
    table = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = read_process(int(entry.name))
            if info is not None:
                table.append(info)
    return table


def descendants(pid: int, table: list[ProcessInfo] | None = None) -> list[int]:
    """The pids of every live process under `pid` (children, theirs, ...)."""
    table = process_table() if table is None else table
    children: dict[int, list[ProcessInfo]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info)
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child.alive:
                out.append(child.pid)
            todo.append(child.pid)
    return out


def browser_processes(
    main_pid: int | None, marker: str, table: list[ProcessInfo] | None = None
) -> list[ProcessInfo]:
    """The live processes of one browser: its main process, its process group, the
    main process's descendants, and any process whose command line names `marker`
    (the browser's own directory)."""
    table = process_table() if table is None else table
    children: dict[int, list[ProcessInfo]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info)
    found: dict[int, ProcessInfo] = {}
    for info in table:
        if (main_pid is not None and main_pid in (info.pid, info.pgid)) or (
            marker and marker in info.cmdline
        ):
            found[info.pid] = info
    stack = [main_pid] if main_pid is not None else []
    stack += list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    return sorted((p for p in found.values() if p.alive), key=lambda p: p.pid)


def find_main_pid(profile_dir: Path, table: list[ProcessInfo] | None = None) -> int | None:
    """The browser process (not a `--type=` child) started with this profile dir."""
    table = process_table() if table is None else table
    flag = f"--user-data-dir={profile_dir}"
    candidates = [
        p.pid for p in table if p.alive and flag in p.cmdline and " --type=" not in p.cmdline
    ]
    return min(candidates) if candidates else None


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def pid_alive(pid: int) -> bool:
    info = read_process(pid)
    return info is not None and info.alive


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def pdeathsig_preexec(sig: int) -> Callable[[], None] | None:
    """A Popen preexec_fn that asks Linux to send `sig` to the child when its parent
    dies, so a killed launcher leaves no orphans (None where that is not available).
    Resolved in the parent: the child only calls a function pointer between fork and
    exec. Call Popen with it only from the main thread: Linux sends the signal when
    the *thread* that forked exits."""
    name = ctypes.util.find_library("c")
    if not name or not hasattr(os, "fork") or os.uname().sysname != "Linux":
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    signum = int(sig)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signum, 0, 0, 0)

    return preexec
