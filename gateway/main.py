"""`conveyor-gateway`: a gateway, configured from the environment.

With CONVEYOR_GATEWAY_PROCESSES=N (N > 1) this process is the gateway's supervisor:
it starts N serving processes (`python -m gateway.main`, told their index by
CONVEYOR_GATEWAY_PROCESS_INDEX), which all listen on CONVEYOR_GRPC_ADDR with
SO_REUSEPORT (the kernel spreads new connections over them), and serves nothing
itself. Each serving process is a whole gateway: its own grpc.aio server, its own
event reader (one Redis connection whatever its watchers) and Redis pool, and the
admission, janitor and schedule loops, which are safe to run in every process as
they are in every gateway (atomic scripts). Only process 0 serves the dashboard;
with CONVEYOR_GATEWAY_METRICS_ADDR, process i serves its /metrics on that port + i.

A serving process that exits with status 1 could not start (the same errors that
stop a single-process gateway): the supervisor stops the others and exits 1. One that
dies otherwise (killed, crashed) is started again, its index and port unchanged; more
than MAX_RESTARTS restarts within RESTART_WINDOW_SECONDS and the supervisor stops them
all and exits 1, rather than serve at part capacity for good. SIGTERM or SIGINT to
the supervisor is passed on to every serving process, which drains as a
single-process gateway does; the supervisor exits once they have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from types import FrameType

import structlog
from redis.exceptions import RedisError

from conveyor import event_loop
from conveyor.logs import configure_logging
from conveyor.metrics_common import parse_addr
from conveyor.processes import pdeathsig_preexec
from conveyor.settings import Settings, load_settings

log = structlog.get_logger("gateway")

#: Tells a serving process started by the supervisor its index (0..N-1).
PROCESS_INDEX_ENV = "CONVEYOR_GATEWAY_PROCESS_INDEX"
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
#: Beyond the serving processes' own drain and grace, how long the supervisor waits
#: for them at shutdown before it kills them.
STOP_MARGIN_SECONDS = 20.0
POLL_SECONDS = 0.1
#: The status a serving process exits with when it cannot start.
CANNOT_START = 1


def process_settings(settings: Settings, index: int) -> Settings:
    """The settings of serving process `index`: the dashboard in process 0 only; the
    metrics endpoint of process i on the configured port + i (a port 0 stays 0)."""
    update: dict[str, str] = {}
    if index > 0:
        update["dashboard_addr"] = "off"
    addr = parse_addr(settings.gateway_metrics_addr)
    if addr is not None and addr[1] != 0 and index > 0:
        host, port = addr
        update["gateway_metrics_addr"] = f"[{host}]:{port + index}" if ":" in host else f"{host}:{port + index}"
    return settings.model_copy(update=update) if update else settings


#: In a serving process, before exec: SIGTERM it when the supervisor dies (Linux), so a
#: supervisor killed outright leaves no gateway serving on its own.
DIE_WITH_SUPERVISOR = pdeathsig_preexec(signal.SIGTERM)


class Supervisor:
    """Starts, watches and stops the serving processes of one gateway."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.gateway_processes
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: deque[float] = deque()
        self.stopping = threading.Event()

    def spawn(self, index: int) -> None:
        env = {**os.environ, PROCESS_INDEX_ENV: str(index)}
        child = subprocess.Popen([sys.executable, "-m", "gateway.main"], env=env,
                                 preexec_fn=DIE_WITH_SUPERVISOR)  # the supervisor runs no threads
        self.children[index] = child
        log.info("gateway process started", index=index, pid=child.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info("gateway supervisor starting", processes=self.count, addr=self.settings.grpc_addr)
        for index in range(self.count):
            self.spawn(index)
        status = 0
        while not self.stopping.wait(POLL_SECONDS):
            status = self._check_children()
            if status:
                break
        self._stop_all()
        log.info("gateway supervisor stopped", status=status)
        return status

    def _check_children(self) -> int:
        """Restarts a serving process that died; non-zero: the gateway must stop."""
        for index, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            if code == CANNOT_START:
                # Status 1: it could not start (its own error line says why), or failed outright.
                log.error("gateway process could not start; stopping the gateway", index=index, pid=child.pid,
                          exit_code=code)
                return 1
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW_SECONDS:
                self.restarts.popleft()
            if len(self.restarts) >= MAX_RESTARTS:
                log.error("gateway processes keep dying; stopping the gateway", index=index, pid=child.pid,
                          exit_code=code, restarts=len(self.restarts), window_seconds=RESTART_WINDOW_SECONDS)
                return 1
            self.restarts.append(now)
            log.warning("gateway process died; starting it again", index=index, pid=child.pid, exit_code=code)
            self.spawn(index)
        return 0

    def _stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        # Each drains health watchers (up to its drain timeout), then its calls (up to the grace).
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        for index, child in self.children.items():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("gateway process did not stop; killing it", index=index, pid=child.pid)
                child.kill()
                child.wait()


def _fixed_port(addr: str) -> bool:
    _host, _sep, port = addr.rpartition(":")
    return port.isdigit() and int(port) != 0


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    raw_index = os.environ.get(PROCESS_INDEX_ENV)
    if settings.gateway_processes > 1 and raw_index is None:
        if not _fixed_port(settings.grpc_addr):
            log.error("gateway cannot start", error=f"CONVEYOR_GATEWAY_PROCESSES={settings.gateway_processes} "
                      f"needs a fixed port in CONVEYOR_GRPC_ADDR (got {settings.grpc_addr!r})")
            sys.exit(1)
        structlog.contextvars.bind_contextvars(process="supervisor")
        sys.exit(Supervisor(settings).run())
    # Imported here: the supervisor serves nothing and need not load the servers.
    from gateway.server import InsecureBinding, serve

    index = int(raw_index) if raw_index is not None else None
    if index is not None:
        structlog.contextvars.bind_contextvars(process=index)
        settings = process_settings(settings, index)
    try:
        event_loop.run(serve(settings, index), settings.event_loop)
    except (InsecureBinding, RedisError, OSError, RuntimeError) as err:
        # What keeps it from starting, said in one line (the store unreachable or
        # refusing its user, unreadable TLS files, serving beyond loopback without auth).
        log.error("gateway cannot start", error=f"{type(err).__name__}: {err}")
        sys.exit(CANNOT_START)


if __name__ == "__main__":
    main()
