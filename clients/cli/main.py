"""`conveyor`: submit and follow jobs, inspect queues, and run the whole system on
one machine (`conveyor up`, `conveyor demo`).

Exit codes: 0 success (for `submit --watch` and `watch`: the job COMPLETED); 1 an
error from the server or a bad file, or a watched job that did not complete; 2 bad
command-line usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

import grpc

from clients.cli.files import JobFileError, read_job_file
from clients.cli.render import (
    JOB_HEADERS,
    WatchPrinter,
    job_row,
    print_outcome,
    print_table,
    state_name,
    to_json,
)
from clients.sdk import DEFAULT_TARGET, AsyncConveyorClient, ConveyorRpcError
from clients.sdk._common import to_state
from conveyor.v1 import job_pb2


class CliError(Exception):
    """Printed as one `error: ...` line; exit code 1."""


def _default_target() -> str:
    from clients.cli.stack import client_target

    return client_target(os.environ.get("CONVEYOR_GRPC_ADDR") or DEFAULT_TARGET)


def _client(args: argparse.Namespace) -> AsyncConveyorClient:
    return AsyncConveyorClient(args.target, api_key=args.api_key or None)


# --- commands ------------------------------------------------------------------------
async def cmd_submit(args: argparse.Namespace) -> int:
    try:
        requests = read_job_file(args.file)
    except JobFileError as err:
        raise CliError(str(err)) from None
    for request in requests:
        if args.queue:
            request.queue = args.queue
        if args.priority:
            request.priority = _priority(args.priority)
        if args.request_id:
            request.request_id = args.request_id
    async with _client(args) as client:
        if len(requests) == 1:
            results = [await client.submit(requests[0])]
        else:
            results = await client.submit_many(requests)
        for result in results:
            if args.quiet:
                print(result.id, flush=True)
                continue
            text = f"submitted job {result.id}: {state_name(result.state)}"
            if result.position:
                text += f", position {result.position}"
            if result.existing:
                text += " (an existing job with this request id)"
            print(text, flush=True)
        if not args.watch:
            return 0
        code = 0
        for result in results:
            code = max(code, await _watch(client, result.id, sys.stdout, quiet=args.quiet, state=result.state))
        return code


async def cmd_watch(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return await _watch(client, args.id, sys.stdout, after=args.after)


async def _watch(
    client: AsyncConveyorClient,
    job_id: str,
    out: TextIO,
    *,
    after: int | None = None,
    quiet: bool = False,
    tty: bool | None = None,
    state: int = 0,
) -> int:
    """Follow a job to its end, then print its outcome. 0 only if it COMPLETED."""
    printer = WatchPrinter(out, tty=tty, state=state)
    try:
        async for message in client.watch(job_id, after_sequence=after):
            if not quiet:
                printer.handle(message)
    finally:
        printer.close()
    job = await client.get(job_id)
    if not quiet:
        print_outcome(job, out)
    return 0 if job.state == job_pb2.JOB_STATE_COMPLETED else 1


async def cmd_get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.get(args.id)
    print(to_json(job))
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    try:
        to_state(args.state)
    except ValueError as err:
        raise CliError(str(err)) from None
    async with _client(args) as client:
        jobs = [
            job
            async for job in client.list(
                queue=args.queue or "",
                state=args.state,
                page_size=min(args.limit, 1000),
                limit=args.limit,
            )
        ]
    if args.json:
        for job in jobs:
            print(json.dumps(json.loads(to_json(job)), separators=(",", ":")))
    elif jobs:
        print_table([job_row(job) for job in jobs], JOB_HEADERS, sys.stdout)
    else:
        print("no jobs", file=sys.stderr)
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.cancel(args.id)
    extra = " (cancel requested; the executor is stopping it)" if job.cancel_requested else ""
    print(f"job {job.id}: {state_name(job.state)}{extra}")
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        job = await client.retry(args.id)
    where = f", position {job.position}" if job.position else ""
    print(f"job {job.id}: {state_name(job.state)}{where} (attempt {job.attempt} so far)")
    return 0


async def cmd_queues(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        queues = [await client.queue(args.name)] if args.name else await client.queues()
    if args.json:
        for queue in queues:
            print(json.dumps(json.loads(to_json(queue)), separators=(",", ":")))
        return 0
    rows = [
        [
            q.name,
            "yes" if q.paused else "no",
            *(str(getattr(q.counts, f)) for f in ("waiting", "delayed", "active", "completed", "failed", "cancelled")),
            str(q.concurrency),
        ]
        for q in queues
    ]
    headers = ["QUEUE", "PAUSED", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED"]
    print_table(rows, [*headers, "CANCELLED", "CONCURRENCY"], sys.stdout)
    return 0


async def cmd_artifact(args: argparse.Namespace) -> int:
    output = args.output or Path(args.name).name
    async with _client(args) as client:
        if output == "-":
            async for chunk in client.artifact_chunks(args.job, args.name):
                sys.stdout.buffer.write(chunk.data)
            sys.stdout.buffer.flush()
            return 0
        target = Path(output)
        # Write beside the target and rename, so a failed download leaves no torn file.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in client.artifact_chunks(args.job, args.name):
                    f.write(chunk.data)
                    size += len(chunk.data)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    print(f"wrote {target} ({size} bytes)", file=sys.stderr)
    return 0


async def cmd_health(args: argparse.Namespace) -> int:
    async with AsyncConveyorClient(args.target, api_key=args.api_key or None, timeout=args.timeout) as client:
        status = await client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


async def cmd_up(args: argparse.Namespace) -> int:
    from clients.cli.up import run_up

    return await run_up(args)


async def cmd_demo(args: argparse.Namespace) -> int:
    from clients.cli.demo import run_demo

    return await run_demo(args)


def _priority(name: str) -> job_pb2.Priority.ValueType:
    key = name.upper()
    key = key if key.startswith("PRIORITY_") else f"PRIORITY_{key}"
    try:
        return job_pb2.Priority.Value(key)
    except ValueError:
        raise CliError(f"unknown priority {name!r}") from None


# --- parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: browser-automation jobs over gRPC.",
        epilog="Run `conveyor demo` to see the whole system run a browser job.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--target",
        default=_default_target(),
        help="gateway address (default: $CONVEYOR_GRPC_ADDR or %(default)s)",
    )
    remote.add_argument(
        "--api-key",
        default=os.environ.get("CONVEYOR_API_KEY"),
        help="API key sent as a bearer token (default: $CONVEYOR_API_KEY)",
    )

    def command(
        name: str, handler: Callable[[argparse.Namespace], Awaitable[int]], text: str, *, client: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[remote] if client else [])
        p.set_defaults(handler=handler)
        return p

    p = command("submit", cmd_submit, "Submit the job(s) in a JSON or YAML file.")
    p.add_argument("file", help="a SubmitJobRequest in the protobuf JSON mapping; - for stdin")
    p.add_argument("--watch", "-w", action="store_true", help="follow the job to its end")
    p.add_argument("--queue", help="override the queue")
    p.add_argument("--priority", help="override the priority (critical, high, normal, low, bulk)")
    p.add_argument("--request-id", help="idempotency key: the same id gives the same job")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the job id")

    p = command("watch", cmd_watch, "Follow a job's progress to its end.")
    p.add_argument("id")
    p.add_argument("--after", type=int, default=None, help="resume after this event sequence")

    p = command("get", cmd_get, "Print a job as JSON.")
    p.add_argument("id")

    p = command("list", cmd_list, "List jobs, newest first.")
    p.add_argument("--queue")
    p.add_argument("--state", help="waiting, delayed, active, completed, failed or cancelled")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("cancel", cmd_cancel, "Cancel a job.")
    p.add_argument("id")

    p = command("retry", cmd_retry, "Give a FAILED or CANCELLED job a fresh set of attempts.")
    p.add_argument("id")

    p = command("queues", cmd_queues, "Queues and their counts per state.")
    p.add_argument("name", nargs="?", help="one queue only")
    p.add_argument("--json", action="store_true")

    p = command("artifact", cmd_artifact, "Download an artifact (a screenshot) of a job.")
    p.add_argument("job")
    p.add_argument("name")
    p.add_argument("-o", "--output", help="file to write (default: NAME; - for stdout)")

    p = command("health", cmd_health, "Check the gateway's health (exit 0 when SERVING).")
    p.add_argument("--service", default="", help="the grpc.health.v1 service name (default: the server)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")

    p = command(
        "up",
        cmd_up,
        "Run Redis (embedded unless CONVEYOR_REDIS_URL is set), the gateway and an "
        "executor in the foreground; Ctrl-C stops them all.",
        client=False,
    )
    _stack_options(p)
    p.add_argument("--executors", type=int, default=1, help="executor processes (default 1)")
    p.add_argument(
        "--grpc-addr",
        default=os.environ.get("CONVEYOR_GRPC_ADDR") or DEFAULT_TARGET,
        help="where the gateway listens (default: $CONVEYOR_GRPC_ADDR or %(default)s)",
    )

    p = command(
        "demo",
        cmd_demo,
        "Start the whole system, run the example browser job against a bundled page, "
        "print its progress and result, and stop.",
        client=False,
    )
    _stack_options(p)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds the job may take")
    p.add_argument("--keep-running", action="store_true", help="keep the system up afterwards (Ctrl-C stops)")
    return parser


def _stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where Redis data, artifacts and logs go (default: $CONVEYOR_DATA_DIR or .conveyor)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds the services get to stop before SIGKILL (default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.handler(args))
        return code
    except CliError as err:
        _error(str(err))
    except ConveyorRpcError as err:
        _error(str(err) + _hint(err, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `conveyor list | head`: the reader left; not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return 1


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _hint(err: ConveyorRpcError, args: argparse.Namespace) -> str:
    if err.code == grpc.StatusCode.UNAVAILABLE and getattr(args, "target", None):
        return f" (is a gateway running at {args.target}? `conveyor up` starts one)"
    if err.code == grpc.StatusCode.UNAUTHENTICATED:
        return " (set --api-key or CONVEYOR_API_KEY)"
    return ""


if __name__ == "__main__":
    main()
