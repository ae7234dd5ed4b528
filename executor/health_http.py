"""The executor's metrics and health endpoint (CONVEYOR_EXECUTOR_METRICS_ADDR): one
HTTP endpoint per executor, served by its supervisor, for all its worker processes.

Why the supervisor and prometheus_client's multiprocess mode (rather than workers
pushing to the supervisor): the workers' counters are bumped where the work happens
(an mmap'd file write, no round trip, nothing lost when a worker dies: its files stay
and keep counting), and the supervisor, which outlives its workers and knows their
pids, both serves the sum and answers for health. The directory
(PROMETHEUS_MULTIPROC_DIR) is <data dir>/metrics/executor-<supervisor pid>: wiped at
start, a dead worker's live gauges removed when the supervisor sees it die
(mark_process_dead), the whole directory removed when the supervisor exits.

- Workers (executor/metrics.py): jobs by queue and kind, run time, slots, the
  browser pool, the store's round trip.
- Supervisor (at scrape time, from /proc): worker processes alive and restarted, PSS
  of each worker and of each of its browsers (a browser's whole process tree).
- /healthz (liveness): 200 while the supervisor runs. /readyz (readiness): 200 when
  the store answers a PING and every worker process is registered in it (its slots
  count for admission); else 503. Both answer JSON with the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from conveyor.metrics_common import HttpEndpoint, Response, metrics_response, parse_addr
from conveyor.processes import browser_processes, descendants, process_table
from conveyor.redis_connection import connect
from conveyor.settings import Settings
from conveyor.store.keys import Keys

#: The environment variable prometheus_client's multiprocess mode reads (set here for the workers).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT_SECONDS = 1.0
PSS_CACHE_SECONDS = 5.0


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _browser_mains(worker_pid: int, table: list[Any]) -> list[tuple[int, str]]:
    """(pid, profile dir) of each browser main process under a worker."""
    under = set(descendants(worker_pid, table))
    out = []
    for info in table:
        if info.pid in under and info.alive and "--user-data-dir=" in info.cmdline and " --type=" not in info.cmdline:
            profile = info.cmdline.split("--user-data-dir=", 1)[1].split(" ", 1)[0]
            out.append((info.pid, profile))
    return out


def memory_families(worker_pids: list[int]) -> list[Metric]:
    """PSS of each worker process (itself) and of each of its browsers (their trees)."""
    table = process_table()
    workers = GaugeMetricFamily("conveyor_executor_worker_pss_bytes", "PSS of each worker process itself.",
                                labels=["worker"])
    browsers = GaugeMetricFamily("conveyor_browser_pss_bytes",
                                 "PSS of each browser: its main process and every process of its tree.",
                                 labels=["worker", "browser"])
    for pid in worker_pids:
        workers.add_metric([str(pid)], _pss_bytes(pid))
        for main, profile in _browser_mains(pid, table):
            total = sum(_pss_bytes(p.pid) for p in browser_processes(main, profile, table))
            browsers.add_metric([str(pid), str(main)], total)
    return [workers, browsers]


class WorkersCollector(multiprocess.MultiProcessCollector):
    """The workers' metric files, merged (prometheus_client's multiprocess mode), but
    for a file a worker has only just created: empty for an instant (it is sized and
    mapped right after), it holds no value yet, and prometheus_client fails on it
    (struct.error), which would fail the scrape of a worker's restart."""

    def collect(self) -> Iterable[Metric]:
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if os.path.getsize(f) > 0]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call, no-any-return]


class SupervisorCollector(Collector):
    def __init__(self, endpoint: ExecutorEndpoint) -> None:
        self.endpoint = endpoint
        self._memory: list[Metric] = []
        self._memory_at = -1e9

    def collect(self) -> Iterable[Metric]:
        pids = self.endpoint.worker_pids()
        alive = GaugeMetricFamily("conveyor_executor_workers", "Worker processes alive now.")
        alive.add_metric([], len(pids))
        restarts = GaugeMetricFamily("conveyor_executor_worker_restarts",
                                     "Worker processes restarted since the executor started.")
        restarts.add_metric([], self.endpoint.restarts)
        slots = GaugeMetricFamily("conveyor_executor_slots", "Slots per worker process (CONVEYOR_EXECUTOR_SLOTS).")
        slots.add_metric([], self.endpoint.settings.executor_slots)
        if time.monotonic() - self._memory_at > PSS_CACHE_SECONDS:
            self._memory = memory_families(pids)
            self._memory_at = time.monotonic()
        return [alive, restarts, slots, *self._memory]


class ExecutorEndpoint:
    """The supervisor's HTTP endpoint (its own thread and event loop)."""

    def __init__(self, settings: Settings, addr: tuple[str, int]) -> None:
        self.settings = settings
        self.addr = addr
        self.dir = Path(settings.data_dir).resolve() / "metrics" / f"executor-{os.getpid()}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        # Inherited by the worker processes (set before they start and import prometheus_client).
        os.environ[MULTIPROC_ENV] = str(self.dir)
        self.registry = CollectorRegistry()
        WorkersCollector(self.registry, path=str(self.dir))  # type: ignore[no-untyped-call]
        self.registry.register(SupervisorCollector(self))
        self.supervisor: Any = None
        self.restarts = 0
        self.port = 0
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutorEndpoint | None:
        addr = parse_addr(settings.executor_metrics_addr)
        return cls(settings, addr) if addr is not None else None

    # -- what the supervisor calls --

    def worker_exited(self, pid: int) -> None:
        """A worker died (the supervisor restarts it): drop its live gauges."""
        self.restarts += 1
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self.dir))  # type: ignore[no-untyped-call]

    def start(self, supervisor: Any) -> None:
        self.supervisor = supervisor
        self._thread = threading.Thread(target=self._run, name="executor-endpoint", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise RuntimeError(f"CONVEYOR_EXECUTOR_METRICS_ADDR={self.settings.executor_metrics_addr}: "
                               f"cannot serve: {self._error}")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the endpoint --

    def worker_pids(self) -> list[int]:
        children = dict(self.supervisor.children) if self.supervisor is not None else {}
        return sorted(c.proc.pid for c in children.values() if c.proc.returncode is None)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = connect(
            self.settings.effective_redis_url, max_connections=2, client_name="conveyor-executor-health",
            socket_timeout=READY_TIMEOUT_SECONDS, socket_connect_timeout=READY_TIMEOUT_SECONDS,
        )
        self._client: Any = client
        endpoint = HttpEndpoint(self.addr, {"/metrics": self._metrics, "/healthz": self._healthz,
                                            "/readyz": self._readyz}, name="executor")
        try:
            await endpoint.start()
        except OSError as exc:
            self._error = exc
            self._started.set()
            await client.aclose()
            return
        self.port = endpoint.port
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await endpoint.close()
            await client.aclose()

    async def _metrics(self) -> Response:
        return await asyncio.to_thread(metrics_response, self.registry)

    async def _healthz(self) -> Response:
        body = {"status": "alive", "pid": os.getpid(), "workers": len(self.worker_pids())}
        return Response(200, json.dumps(body).encode(), "application/json")

    async def _readyz(self) -> Response:
        pids = self.worker_pids()
        problems: list[str] = []
        registered: list[int] = []
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS * 2):
                now_s, now_us = await self._client.time()
                now_ms = int(now_s) * 1000 + int(now_us) // 1000
                keys = Keys(self.settings.key_prefix)
                ids = {m.decode() for m in await self._client.zrangebyscore(keys.executors, now_ms, "+inf")}
        except Exception as exc:
            problems.append(f"store unreachable: {type(exc).__name__}: {str(exc)[:200]}")
            ids = set()
        host = socket.gethostname()
        for pid in pids:
            if any(i.startswith(f"{host}-{pid}-") for i in ids):
                registered.append(pid)
        if not problems:
            expected = self.settings.executor_processes
            missing = [pid for pid in pids if pid not in registered]
            if len(pids) < expected:
                problems.append(f"{len(pids)} of {expected} worker processes running")
            if missing:
                problems.append(f"worker process(es) {missing} not registered with the store (yet)")
        body = {"status": "ready" if not problems else "not ready", "workers": pids, "registered": registered,
                "problems": problems}
        return Response(200 if not problems else 503, json.dumps(body).encode(), "application/json")
