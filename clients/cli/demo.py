"""`conveyor demo`: the whole system on this machine running DESIGN.md's example job.

It starts an embedded redis-server, the gateway and an executor (which may visit
127.0.0.1 for this run only), serves the bundled `form.html` from a loopback HTTP
server, submits the example job, shows its progress, prints the outcome, saves the
screenshot, and stops everything. Exit code 0 only if the job COMPLETED.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from clients.cli.render import WatchPrinter, print_outcome, state_name
from clients.cli.stack import LocalStack
from clients.cli.up import Signals, data_dir_of, supervise
from clients.demo import example_job, pages_dir
from conveyor.v1 import job_pb2
from conveyor_client import AsyncConveyorClient


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """A loopback HTTP server for the demo pages, on a thread of its own."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="demo-pages", daemon=True)

    def url(self, page: str) -> str:
        return f"http://127.0.0.1:{self.port}/{page}"

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(args: argparse.Namespace) -> int:
    out = sys.stdout
    data_dir = data_dir_of(args).resolve()
    stack_dir = data_dir / "demo"
    screenshot_path = data_dir / "demo-screenshot.png"

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with PageServer(pages_dir()) as pages, Signals() as signals:
        page_url = pages.url("form.html")
        stack = LocalStack(
            data_dir=stack_dir,
            grpc_addr=f"127.0.0.1:{free_port()}",
            # The demo page is on loopback, which the URL policy refuses by default.
            env={"CONVEYOR_ALLOWED_HOSTS": "127.0.0.1", "CONVEYOR_LOG_FORMAT": "json"},
            executor_env={"CONVEYOR_ALLOWED_HOSTS": "127.0.0.1"},
            log_dir=stack_dir / "logs",
            out=out,
        )
        say("Conveyor demo: the whole system on this machine")
        say(f"  data and logs: {stack_dir}")
        say(f"  demo page:     {page_url}")

        async def body() -> int:
            say(f"gateway SERVING on {stack.target}")
            say()
            async with AsyncConveyorClient(stack.target, api_key=stack.api_key) as client:
                submitted = await client.submit(example_job(page_url))
                where = f", position {submitted.position}" if submitted.position else ""
                say(f"submitted the example job {submitted.id}: {state_name(submitted.state)}{where}")
                printer = WatchPrinter(out, state=submitted.state)
                try:
                    async with asyncio.timeout(args.timeout):
                        async for message in client.watch(submitted.id):
                            printer.handle(message)
                except TimeoutError:
                    printer.close()
                    say(f"the job did not finish within {args.timeout:g} s; cancelling it")
                    await client.cancel(submitted.id)
                finally:
                    printer.close()
                job = await client.get(submitted.id)
                say()
                print_outcome(job, out, artifact_hint=False)
                for artifact in job.result.artifacts:
                    if artifact.content_type.startswith("image/"):
                        data = await client.artifact(job.id, artifact.name)
                        screenshot_path.write_bytes(data)
                        say(f"screenshot saved to {screenshot_path} ({len(data)} bytes)")
                        break
            completed = job.state == job_pb2.JOB_STATE_COMPLETED
            if not completed:
                say(f"the job did not complete; the services' logs are in {stack.log_dir}")
            if args.keep_running:
                say()
                say(f"still running: gRPC on {stack.target}, the page at {page_url}")
                say(f"  try: conveyor get {job.id} --target {stack.target}")
                say("Ctrl-C stops everything")
            return 0 if completed else 1

        code = await supervise(stack, signals, body, grace=args.grace, keep_running=args.keep_running)
    say("demo finished: " + ("the job COMPLETED" if code == 0 else f"exit code {code}"))
    return code
