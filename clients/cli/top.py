"""`conveyor top`: a live full-screen view of the queues (counts, rates, health), the
workers and the running jobs, drawn with rich's Live.

It follows streams, not a polling loop: one WatchQueue per queue; when events
arrive, the queues they touched are re-read with GetQueue (debounced, at most every
DEBOUNCE_SECONDS), with the running jobs and the workers. Only the list of queues
(for a queue's first job) and the workers' heartbeats are looked at again every
RELIST_SECONDS. `q` or Ctrl-C quits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conveyor.v1 import job_pb2, queue_service_pb2
from conveyor_client import AsyncConveyorClient, ConveyorRpcError, queue_events

#: Events this close together cause one re-read.
DEBOUNCE_SECONDS = 0.2
#: How often the list of queues (new ones) and the workers' heartbeats are re-read.
RELIST_SECONDS = 5.0
#: The window of the jobs/s figure.
RATE_WINDOW_SECONDS = 10.0
RUNNING_SHOWN = 15
COUNTS = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
HEALTH_STYLE = {"HEALTHY": "green", "DEGRADED": "yellow", "UNHEALTHY": "bold red"}


@dataclass
class QueueView:
    queue: queue_service_pb2.Queue
    #: (monotonic time, jobs ended in the last hour) samples, for jobs/s.
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=200))

    def update(self, queue: queue_service_pb2.Queue, now: float) -> None:
        self.queue = queue
        ended = sum(queue.stats.completed_per_minute) + sum(queue.stats.failed_per_minute)
        self.samples.append((now, ended))

    def rate(self, now: float) -> float | None:
        recent = [(t, n) for t, n in self.samples if now - t <= RATE_WINDOW_SECONDS]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] <= 0:
            return None
        return max(0, recent[-1][1] - recent[0][1]) / max(recent[-1][0] - recent[0][0], 1.0)


def _ms(d: Any) -> str:
    """A Duration's JSON form ("1.5s") for people."""
    if not d:
        return "-"
    seconds = float(str(d).rstrip("s"))
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


class Top:
    def __init__(self, client: AsyncConveyorClient, target: str, only: list[str]) -> None:
        self.client = client
        self.target = target
        self.only = only
        self.queues: dict[str, QueueView] = {}
        self.running: list[job_pb2.Job] = []
        self.workers: list[queue_service_pb2.Worker] | None = None
        self.workers_note = ""
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.note = ""
        self.events_seen = 0

    # ---- data -----------------------------------------------------------------------

    async def _watch(self, name: str) -> None:
        try:
            async for message in self.client.watch_queue(name, max_batch_size=100):
                events = queue_events(message)
                if events:
                    self.events_seen += len(events)
                    self.dirty.add(name)
                    self.wake.set()
        except ConveyorRpcError as err:
            self.note = f"watch of {name} ended: {err}"

    async def _relist(self) -> None:
        names = [q.name for q in await self.client.queues()]
        if self.only:
            names = [n for n in names if n in self.only] + [n for n in self.only if n not in names]
        for name in names:
            if name not in self.watches or self.watches[name].done():
                self.watches[name] = asyncio.create_task(self._watch(name))
                self.dirty.add(name)

    async def _refresh(self, with_workers: bool) -> None:
        now = time.monotonic()
        for name in sorted(self.dirty):
            self.dirty.discard(name)
            try:
                queue = await self.client.queue(name)
            except ConveyorRpcError as err:
                if err.code == grpc.StatusCode.NOT_FOUND:
                    continue  # named with --queue, no job yet
                raise
            view = self.queues.get(name)
            if view is None:
                view = self.queues[name] = QueueView(queue)
            view.update(queue, now)
        running: list[job_pb2.Job] = []
        for name in sorted(self.queues):
            if self.queues[name].queue.counts.active and len(running) < RUNNING_SHOWN:
                running += [j async for j in self.client.list(queue=name, state="active",
                                                              limit=RUNNING_SHOWN - len(running))]
        self.running = running
        if with_workers and self.workers_note == "":
            try:
                self.workers = await self.client.workers()
            except ConveyorRpcError as err:
                if err.code != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                self.workers_note = "workers: shown to admin keys"

    # ---- view -----------------------------------------------------------------------

    def render(self) -> Group:
        now = time.monotonic()
        head = Text.assemble(("conveyor top", "bold"), f"  {self.target}  ", (time.strftime("%H:%M:%S"), "dim"),
                             ("   q quits", "dim"))
        queues = Table(title="Queues", title_justify="left", expand=True, header_style="bold")
        for column in ("QUEUE", "HEALTH", *(c.upper() for c in COUNTS), "JOBS/S", "PER MIN", "OK %",
                       "WAIT p50", "RUN p50"):
            queues.add_column(column, justify="left" if column in ("QUEUE", "HEALTH") else "right", no_wrap=True)
        issues: list[Text] = []
        for name in sorted(self.queues):
            view = self.queues[name]
            q = view.queue
            data = MessageToDict(q)
            stats = data.get("stats", {})
            health = str(data.get("health", "")).removeprefix("QUEUE_HEALTH_")
            if health == "UNSPECIFIED":
                health = ""
            verdict = Text(health or "-", style=HEALTH_STYLE.get(health, ""))
            if q.paused:
                verdict.append(" paused", style="yellow")
            rate = view.rate(now)
            per_min = stats.get("throughputPerMinute")
            if per_min is None:
                per_min = (q.stats.completed_last_hour + q.stats.failed_last_hour) / 60
            success = stats.get("successRate")
            queues.add_row(
                name, verdict, *(str(getattr(q.counts, c)) for c in COUNTS),
                "-" if rate is None else f"{rate:.1f}", f"{float(per_min):.1f}",
                "-" if success is None else f"{float(success) * 100:.0f}",
                _ms(stats.get("waitTimeP50")), _ms(stats.get("runTimeP50")),
            )
            for issue in data.get("issues", []):
                issues.append(Text(f"  {name}: {issue.get('message') or issue.get('reason')}", style="yellow"))
        if not self.queues:
            queues.add_row("(no queue yet)", *([""] * (len(queues.columns) - 1)))
        parts: list[Any] = [head, queues, *issues]
        workers = Table(title="Workers", title_justify="left", expand=True, header_style="bold")
        for column in ("ID", "HOST", "PID", "SLOTS", "RUNNING", "DONE", "HEARTBEAT", "KINDS"):
            workers.add_column(column, no_wrap=column != "KINDS")
        wall = time.time()
        for w in self.workers or []:
            beat = w.last_heartbeat_time.ToMilliseconds() / 1000 if w.HasField("last_heartbeat_time") else wall
            workers.add_row(w.id, w.host, str(w.pid), str(w.slots), str(len(w.running_job_ids)),
                            str(w.jobs_completed), f"{_age(max(0.0, wall - beat))} ago", ", ".join(w.kinds))
        parts.append(Text(self.workers_note, style="dim") if self.workers_note else workers)
        running = Table(title="Running jobs", title_justify="left", expand=True, header_style="bold")
        for column in ("JOB", "QUEUE", "KIND", "PROGRESS", "MESSAGE", "RUNNING FOR"):
            running.add_column(column, no_wrap=column != "MESSAGE")
        for job in self.running:
            started = job.start_time.ToMilliseconds() / 1000 if job.HasField("start_time") else wall
            running.add_row(job.id, job.queue, job.kind, f"{job.progress}%", job.progress_message,
                            _age(max(0.0, wall - started)))
        if not self.running:
            running.add_row("(none)", "", "", "", "", "")
        parts.append(running)
        parts.append(Text(f"{self.events_seen} events followed" + (f"  ·  {self.note}" if self.note else ""),
                          style="dim"))
        return Group(*parts)

    # ---- loop -------------------------------------------------------------------------

    async def run(self, live: Live) -> None:
        await self._relist()
        await self._refresh(with_workers=True)
        live.update(self.render(), refresh=True)
        next_relist = time.monotonic() + RELIST_SECONDS
        while not self.stop.is_set():
            waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(self.stop.wait())]
            # Wakes at least every second: the clock and the heartbeat ages move on screen.
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if self.stop.is_set():
                break
            relist = time.monotonic() >= next_relist
            if self.wake.is_set():
                await asyncio.sleep(DEBOUNCE_SECONDS)
                self.wake.clear()
            if relist:
                await self._relist()
                next_relist = time.monotonic() + RELIST_SECONDS
            if self.dirty or relist:
                try:
                    await self._refresh(with_workers=True)
                except ConveyorRpcError as err:
                    self.note = str(err)  # shown; the streams reconnect on their own
            live.update(self.render(), refresh=True)

    async def close(self) -> None:
        for task in self.watches.values():
            task.cancel()
        await asyncio.gather(*self.watches.values(), return_exceptions=True)


@contextlib.contextmanager
def keys(on_key: Any) -> Iterator[None]:
    """Single keys from a terminal's stdin (cbreak: no Enter needed, Ctrl-C still a signal)."""
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    try:
        tty.setcbreak(fd)
        loop.add_reader(fd, lambda: on_key(os.read(fd, 32)))
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def cmd_top(args: argparse.Namespace) -> int:
    from clients.cli.main import command_client

    async with command_client(args) as client:
        top = Top(client, args.target, args.queue or [])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, top.stop.set)

        def on_key(data: bytes) -> None:
            if b"q" in data.lower() or b"\x03" in data:
                top.stop.set()

        try:
            with keys(on_key), Live(console=Console(), screen=True, auto_refresh=False) as live:
                await top.run(live)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await top.close()
    return 0


def add_top_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], remote: argparse.ArgumentParser) -> None:
    text = ("A live full-screen view of queues (counts, rates, health), workers and running jobs, "
            "following the queues' event streams; q or Ctrl-C quits.")
    p = sub.add_parser("top", help=text, description=text, parents=[remote])
    p.set_defaults(handler=cmd_top)
    p.add_argument("--queue", action="append", metavar="NAME", help="only this queue (repeatable; default: all)")
