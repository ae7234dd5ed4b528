"""`conveyor up`: the whole system in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from clients.cli.stack import LocalStack, StackError
from conveyor.settings import Settings


class Signals:
    """SIGINT/SIGTERM as events: the first asks for a graceful stop, the second for an
    immediate one."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.received: str | None = None
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            self.force.set()
            return
        self.received = sig.name
        self.stop.set()


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else Settings().data_dir


async def supervise(
    stack: LocalStack,
    signals: Signals,
    body: Callable[[], Awaitable[int]] | None = None,
    *,
    on_ready: Callable[[], None] | None = None,
    keep_running: bool = False,
    ready_timeout: float = 60.0,
    grace: float = 20.0,
) -> int:
    """Start the stack, then run `body` (or nothing) until it returns, a signal
    arrives, or a part of the stack dies; with `keep_running`, stay up after the body
    until a signal. Stop everything in every case.

    The exit code is the body's, 0 after a signal when there is no body, 130 when a
    signal cut the body (or the start) short, and 1 when the stack failed."""
    try:
        starting = asyncio.create_task(stack.start(ready_timeout))
        stopped = asyncio.create_task(signals.stop.wait())
        await asyncio.wait({starting, stopped}, return_when="FIRST_COMPLETED")
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StackError):
                await starting
            stack.say(f"{signals.received}: stopped while starting")
            return 130
        stopped.cancel()
        try:
            starting.result()
        except StackError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 1
        if on_ready is not None:
            on_ready()

        died = asyncio.create_task(stack.first_exit())
        signalled = asyncio.create_task(signals.stop.wait())
        work = asyncio.create_task(_run(body)) if body is not None else None
        body_code: int | None = None
        try:
            if work is not None:
                await asyncio.wait({died, signalled, work}, return_when="FIRST_COMPLETED")
                if work.done() and not died.done():
                    body_code = work.result()  # re-raises the body's error
                    if not keep_running:
                        return body_code
            if work is None or work.done():
                await asyncio.wait({died, signalled}, return_when="FIRST_COMPLETED")
            if died.done():
                print(f"error: {stack.describe_exit(died.result())}", file=sys.stderr, flush=True)
                print("stopping everything", file=sys.stderr, flush=True)
                return 1
            stack.say(f"{signals.received}: stopping")
            if body_code is not None:
                return body_code
            return 130 if body is not None else 0
        finally:
            for task in (died, signalled, work):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (died, signalled, work) if t), return_exceptions=True)
    finally:
        await stack.stop(grace, force=signals.force)


async def _run(body: Callable[[], Awaitable[int]]) -> int:
    return await body()


def dashboard_line(addr: str, data_dir: Path, auth: str = "on") -> str:
    """Where the gateway's web dashboard is, if it is listening there (a taken port is skipped by the gateway)."""
    host, _, port = addr.strip().rpartition(":")
    if not port.isdigit() or port == "0":
        return "dashboard: off" if addr.strip().lower() in ("off", "") else f"dashboard: see the gateway's log ({addr})"
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1).close()
    except OSError:
        return f"dashboard: not served ({addr} taken? set CONVEYOR_DASHBOARD_ADDR)"
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    login = f"   (log in with the key in {data_dir / 'admin.key'})" if auth == "on" else ""
    return f"dashboard on http://{shown}:{port}/{login}"


async def run_up(args: argparse.Namespace) -> int:
    settings = Settings()
    data_dir = data_dir_of(args)
    env: dict[str, str] = {}
    if "CONVEYOR_LOG_FORMAT" not in os.environ and sys.stderr.isatty():
        env["CONVEYOR_LOG_FORMAT"] = "console"
    stack = LocalStack(
        data_dir=data_dir,
        grpc_addr=args.grpc_addr,
        redis_url=settings.redis_url,
        executors=max(1, args.executors),
        env=env,
    )
    if settings.redis_url:
        stack.say(f"using Redis at {settings.redis_url} (CONVEYOR_REDIS_URL)")
    def ready() -> None:
        stack.say(f"Conveyor is up: gRPC{' (TLS)' if stack.client_tls else ''} on {stack.target}   "
                  "(Ctrl-C stops everything)")
        stack.say(dashboard_line(settings.dashboard_addr, data_dir, settings.auth))

    with Signals() as signals:
        return await supervise(stack, signals, on_ready=ready, grace=args.grace)
