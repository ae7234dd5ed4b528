"""Keeps N worker processes alive. Dramatiq's own master exits when one child dies;
this one restarts it (with backoff if it keeps dying) and stops them all on
SIGTERM/SIGINT. Children die with the supervisor (PR_SET_PDEATHSIG), so a killed
executor leaves no orphan worker behind (their Chromium goes with them)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from conveyor.processes import pdeathsig_preexec

log = structlog.get_logger("executor.supervisor")

RESTART_BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 30.0


#: Workers die at once with their supervisor: a killed executor's jobs are then
#: recovered by the store, not half-finished by orphans.
DIE_WITH_SUPERVISOR = pdeathsig_preexec(signal.SIGKILL)


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    failures: int = 0


class Supervisor:
    def __init__(
        self, processes: int, *, stop_grace_s: float = 15.0, on_worker_exit: Callable[[int], None] | None = None
    ) -> None:
        self.processes = processes
        #: Told each dead worker's pid (the metrics endpoint drops its live gauges).
        self.on_worker_exit = on_worker_exit
        self.stop_grace_s = stop_grace_s
        self.children: dict[int, Child] = {}
        self._stopping = False

    def _spawn(self, index: int, failures: int = 0) -> Child:
        proc = subprocess.Popen(
            [sys.executable, "-m", "executor.worker", "--index", str(index)],
            preexec_fn=DIE_WITH_SUPERVISOR,
        )
        log.info("worker started", index=index, pid=proc.pid)
        child = Child(index, proc, time.monotonic(), failures)
        self.children[index] = child
        return child

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for i in range(self.processes):
            self._spawn(i)
        pending: dict[int, tuple[float, int]] = {}  # index -> (restart at, failures so far)
        while not self._stopping:
            now = time.monotonic()
            for index, child in list(self.children.items()):
                code = child.proc.poll()
                if code is None:
                    continue
                del self.children[index]
                if self.on_worker_exit is not None:
                    self.on_worker_exit(child.proc.pid)
                ran = now - child.started
                failures = 1 if ran > HEALTHY_AFTER_S else child.failures + 1
                delay = min(0.5 * 2 ** (failures - 1), RESTART_BACKOFF_MAX_S) if failures > 1 else 0.0
                log.error("worker died; restarting", index=index, pid=child.proc.pid, code=code,
                          ran_s=round(ran, 1), restart_in_s=delay)
                pending[index] = (now + delay, failures)
            for index, (at, failures) in list(pending.items()):
                if now >= at:
                    del pending[index]
                    self._spawn(index, failures)
            time.sleep(0.1)
        return self._stop_all()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        log.info("stopping workers", count=len(self.children))
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for child in self.children.values():
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in time; killing", pid=child.proc.pid)
                child.proc.kill()
                child.proc.wait()
        return 0
