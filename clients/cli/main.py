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
import math
import os
import re
import sys
import tempfile
import textwrap

# Before grpc is imported (see tests/conftest.py): `conveyor up` forks its services with
# a preexec_fn (PDEATHSIG) while its own gRPC calls run; gRPC's fork support would
# restart its threads in the forked child and abort it before exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
import yaml
from google.rpc import status_pb2

from clients.cli.admin_key import api_key_of
from clients.cli.files import JobFileError, read_job_file
from clients.cli.render import (
    JOB_HEADERS,
    WORKER_HEADERS,
    WatchPrinter,
    health_name,
    job_row,
    print_outcome,
    print_queue,
    print_table,
    queue_event_line,
    state_name,
    status_text,
    success_text,
    to_json,
    worker_row,
)
from conveyor.net import is_loopback
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor_client import (
    DEFAULT_TARGET,
    AsyncConveyorClient,
    ConveyorRpcError,
    job_output,
    job_request,
    kinds_of,
    queue_events,
)
from conveyor_client._common import to_state


class CliError(Exception):
    """Printed as one `error: ...` line; exit code 1."""


def _default_target() -> str:
    from clients.cli.stack import client_target

    return client_target(os.environ.get("CONVEYOR_GRPC_ADDR") or DEFAULT_TARGET)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_tls() -> bool | None:
    """CONVEYOR_TLS: 1/true/yes/on or 0/false/no/off; unset: decided by the other flags."""
    value = os.environ.get("CONVEYOR_TLS")
    if value is None:
        return None
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise CliError(f"CONVEYOR_TLS={value!r}: say 1/true/yes/on or 0/false/no/off")


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The client's TLS arguments from --tls/--no-tls, --ca-cert, --client-cert and
    --client-key (and CONVEYOR_TLS, CONVEYOR_CA_CERT, CONVEYOR_CLIENT_CERT,
    CONVEYOR_CLIENT_KEY)."""
    options = {
        "tls": args.tls if args.tls is not None else _env_tls(),
        "ca_cert": args.ca_cert or None,
        "client_cert": args.client_cert or None,
        "client_key": args.client_key or None,
    }
    if all(v is None for v in options.values()) and "://" not in str(args.target) and is_loopback(str(args.target)):
        # A gateway of this machine serving TLS, as `conveyor up` starts it here (its
        # settings in this environment): talk to it as `up` does.
        from clients.cli.stack import StackError, client_tls_of

        try:
            return {**options, **client_tls_of(os.environ)}
        except StackError as err:
            raise CliError(str(err)) from None
    return options


def command_client(args: argparse.Namespace, **kwargs: Any) -> AsyncConveyorClient:
    """The client of a command: its --target, API key and TLS flags."""
    try:
        return AsyncConveyorClient(args.target, api_key=api_key_of(args), **tls_options(args), **kwargs)
    except ValueError as err:
        raise CliError(f"TLS: {err}") from None


# --- commands ------------------------------------------------------------------------
def read_kind_input(text: str, stdin: TextIO | None = None) -> dict[str, Any]:
    """`--input`: a JSON object, or @FILE (JSON, or YAML for .yaml/.yml; @- for stdin)."""
    label, yaml_ok = "--input", False
    if text.startswith("@"):
        path = text[1:]
        label = f"--input {'<stdin>' if path == '-' else path}"
        yaml_ok = Path(path).suffix.lower() in {".yaml", ".yml"}
        try:
            text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise CliError(f"{label}: cannot read: {getattr(err, 'strerror', None) or err}") from None
        if not text.strip():
            raise CliError(f"{label}: the file is empty")
    try:
        data = yaml.safe_load(text) if yaml_ok else json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{label}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except yaml.YAMLError as err:
        raise CliError(f"{label}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise CliError(f"{label}: expected an object (the kind's input), got {type(data).__name__}")
    return data


def _submit_requests(args: argparse.Namespace) -> list[job_service_pb2.SubmitJobRequest]:
    if args.kind:
        data = read_kind_input(args.input) if args.input is not None else {}
        try:
            return [job_request(kind=args.kind, input=data)]
        except (TypeError, ValueError) as err:
            raise CliError(f"--input: {err}") from None
    try:
        return read_job_file(args.file)
    except JobFileError as err:
        raise CliError(str(err)) from None


async def cmd_submit(args: argparse.Namespace) -> int:
    requests = _submit_requests(args)
    for request in requests:
        if args.queue:
            request.queue = args.queue
        if args.priority:
            request.priority = _priority(args.priority)
        if args.request_id:
            request.request_id = args.request_id
    async with command_client(args) as client:
        refused: dict[int, status_pb2.Status] = {}
        if len(requests) == 1 and not args.allow_partial:
            results = [await client.submit(requests[0])]
        else:
            response = await client.submit_many(requests, allow_partial=args.allow_partial)
            results = list(response.results)
            refused = {e.index: e.error for e in response.errors}
        for index, result in enumerate(results):
            if index in refused:
                # In order with the others; on stderr with -q, so stdout stays ids only.
                line = f"request {index} refused: {status_text(refused[index])}"
                print(line, file=sys.stderr if args.quiet else sys.stdout, flush=True)
                continue
            if args.quiet:
                print(result.id, flush=True)
                continue
            text = f"submitted job {result.id}: {state_name(result.state)}"
            if result.position:
                text += f", position {result.position}"
            if result.existing:
                text += " (an existing job with this request id)"
            print(text, flush=True)
        code = 1 if refused else 0
        if not args.watch:
            return code
        for index, result in enumerate(results):
            if index not in refused:
                # From the job's first event on (the one the line above reported): what
                # happened between the submit and the watch is shown too.
                code = max(code, await _watch(client, result.id, sys.stdout, after=FIRST_EVENT, quiet=args.quiet,
                                              state=result.state))
        return code


async def cmd_watch(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        return await _watch(client, args.id, sys.stdout, after=args.after)


#: A job's first event: its creation, in the state SubmitJob answered with.
FIRST_EVENT = 1


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
        print_output(job, out)
    return 0 if job.state == job_pb2.JOB_STATE_COMPLETED else 1


def print_output(job: job_pb2.Job, out: TextIO) -> None:
    """What a kind's handler returned (`result.output`), as indented JSON."""
    output = job_output(job)
    if output is not None:
        print("output:", file=out)
        print(textwrap.indent(json.dumps(output, indent=2, ensure_ascii=False), "  "), file=out)
        out.flush()


async def cmd_get(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        job = await client.get(args.id)
    print(to_json(job))
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    try:
        to_state(args.state)
    except ValueError as err:
        raise CliError(str(err)) from None
    async with command_client(args) as client:
        jobs = [
            job
            async for job in client.list(
                queue=args.queue or "",
                state=args.state,
                kind=args.kind or "",
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
    async with command_client(args) as client:
        job = await client.cancel(args.id)
    extra = " (cancel requested; the executor is stopping it)" if job.cancel_requested else ""
    print(f"job {job.id}: {state_name(job.state)}{extra}")
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        job = await client.retry(args.id)
    where = f", position {job.position}" if job.position else ""
    print(f"job {job.id}: {state_name(job.state)}{where} (attempt {job.attempt} so far)")
    return 0


async def cmd_queues(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        queues = [await client.queue(args.name)] if args.name else await client.queues()
    if args.json:
        for queue in queues:
            print(json.dumps(json.loads(to_json(queue)), separators=(",", ":")))
        return 0
    rows = [
        [
            q.name,
            health_name(q.health),
            "yes" if q.paused else "no",
            *(str(getattr(q.counts, f)) for f in ("waiting", "delayed", "active", "completed", "failed", "cancelled")),
            str(q.concurrency),
            success_text(q.stats),
            f"{q.stats.throughput_per_minute:.1f}",
            ", ".join(i.reason for i in q.issues) or "-",
        ]
        for q in queues
    ]
    headers = ["QUEUE", "HEALTH", "PAUSED", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED"]
    print_table(rows, [*headers, "CANCELLED", "CONCURRENCY", "SUCCESS", "PER MIN", "ISSUES"], sys.stdout)
    return 0


async def cmd_queue(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        queue = await client.queue(args.name)
    if args.json:
        print(to_json(queue))
    else:
        print_queue(queue, sys.stdout)
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        queue = await client.pause_queue(args.name)
    running = f", {queue.counts.active} active will finish" if queue.counts.active else ""
    print(f"queue {queue.name}: paused ({queue.counts.waiting} waiting{running})")
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        queue = await client.resume_queue(args.name)
    print(f"queue {queue.name}: resumed ({queue.counts.waiting} waiting)")
    return 0


async def cmd_queue_set(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        queue = await client.update_queue(args.name, args.concurrency, args.host_rate_limit)
    rate = f"{queue.host_rate_limit} navigations/s per host" if queue.host_rate_limit else "none"
    print(f"queue {queue.name}: concurrency {queue.concurrency}, host rate limit {rate}")
    return 0


async def cmd_clean(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        deleted = await client.clean_queue(args.name, args.state, args.older_than, args.limit)
    age = f" that ended more than {_age_text(args.older_than)} ago" if args.older_than else ""
    print(f"queue {args.name}: deleted {deleted} {args.state} job{'' if deleted == 1 else 's'}{age}")
    return 0


async def cmd_retry_failed(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        retried = await client.retry_failed(
            args.name, args.limit, priority=_priority(args.priority) if args.priority else None,
            max_attempts=args.max_attempts or None,
        )  # fmt: skip
    overrides = [f"priority {args.priority.lower()}"] if args.priority else []
    if args.max_attempts:
        overrides.append(f"{args.max_attempts} attempt{'' if args.max_attempts == 1 else 's'}")
    how = f" ({', '.join(overrides)})" if overrides else ""
    print(f"queue {args.name}: retried {retried} failed job{'' if retried == 1 else 's'}{how}")
    return 0


async def cmd_watch_queue(args: argparse.Namespace) -> int:
    """Runs until interrupted; one line per event, flushed as it comes."""
    async with command_client(args) as client:
        # In batches: a busy queue's events come as the bursts they happen in. (A
        # heartbeat carries none; it only proves the stream is alive.)
        async for message in client.watch_queue(args.name, after_sequence=args.after, max_batch_size=100):
            for event in queue_events(message):
                if args.json:
                    print(json.dumps(json.loads(to_json(event)), separators=(",", ":")))
                else:
                    print(queue_event_line(event))
            sys.stdout.flush()
    return 0


async def cmd_workers(args: argparse.Namespace) -> int:
    async with command_client(args) as client:
        workers = await client.workers()
    if args.json:
        for worker in workers:
            print(json.dumps(json.loads(to_json(worker)), separators=(",", ":")))
    elif workers:
        now = time.time()
        print_table([worker_row(w, now) for w in workers], WORKER_HEADERS, sys.stdout)
    else:
        print("no workers alive", file=sys.stderr)
    return 0


async def cmd_kinds(args: argparse.Namespace) -> int:
    """The kinds the live executors serve (from ListWorkers: no RPC lists kinds)."""
    async with command_client(args) as client:
        workers = await client.workers()
    kinds = kinds_table(workers)
    if args.json:
        for name, count in kinds:
            print(json.dumps({"kind": name, "workers": count}, separators=(",", ":")))
    elif kinds:
        print_table([[name, str(count)] for name, count in kinds], ["KIND", "WORKERS"], sys.stdout)
    elif workers:
        print(f"no kinds published by the {len(workers)} live worker(s)", file=sys.stderr)
    else:
        print("no workers alive", file=sys.stderr)
    return 0


def kinds_table(workers: Sequence[queue_service_pb2.Worker]) -> list[tuple[str, int]]:
    """Each kind the workers serve, with how many serve it, by name."""
    return list(kinds_of(workers).items())


async def cmd_artifact(args: argparse.Namespace) -> int:
    output = args.output or Path(args.name).name
    async with command_client(args) as client:
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
    async with command_client(args, timeout=args.timeout) as client:
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


_AGE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_age(text: str) -> float:
    """Seconds from "90s", "15m", "1h30m", "2d" or a plain number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _AGE_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 90s, 15m, 1h30m or 2d)") from None
        seconds = sum(float(n) * _AGE_UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return seconds


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


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
    remote.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="talk TLS to the gateway (default: $CONVEYOR_TLS; on with --ca-cert, a client certificate, "
        "or a grpcs:// or https:// target)",
    )
    remote.add_argument(
        "--ca-cert",
        metavar="PEM",
        default=os.environ.get("CONVEYOR_CA_CERT"),
        help="CA bundle the gateway's certificate must be signed by; implies --tls "
        "(default: $CONVEYOR_CA_CERT, else the system's CAs)",
    )
    remote.add_argument(
        "--client-cert",
        metavar="PEM",
        default=os.environ.get("CONVEYOR_CLIENT_CERT"),
        help="client certificate, for a gateway that requires one (mTLS); with --client-key "
        "(default: $CONVEYOR_CLIENT_CERT)",
    )
    remote.add_argument(
        "--client-key",
        metavar="PEM",
        default=os.environ.get("CONVEYOR_CLIENT_KEY"),
        help="the client certificate's private key (default: $CONVEYOR_CLIENT_KEY)",
    )

    def command(
        name: str, handler: Callable[[argparse.Namespace], Awaitable[int]], text: str, *, client: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[remote] if client else [])
        p.set_defaults(handler=handler)
        return p

    p = command(
        "submit", cmd_submit, "Submit the job(s) in a JSON or YAML file, or a job of a kind: --kind NAME --input JSON."
    )
    p.add_argument("file", nargs="?", help="a SubmitJobRequest in the protobuf JSON mapping; - for stdin")
    p.add_argument("--kind", help="instead of a file: a job of this kind (see `conveyor kinds`)")
    p.add_argument(
        "--input", help="with --kind: the kind's input, a JSON object or @FILE (JSON or YAML; @- for stdin)"
    )
    p.add_argument("--watch", "-w", action="store_true", help="follow the job to its end")
    p.add_argument("--queue", help="override the queue")
    p.add_argument("--priority", help="override the priority (critical, high, normal, low, bulk)")
    p.add_argument("--request-id", help="idempotency key: the same id gives the same job")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the job id")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="batch: submit the valid requests and report each refused one by index (exit 1 if any was refused)",
    )

    p = command("watch", cmd_watch, "Follow a job's progress to its end.")
    p.add_argument("id")
    p.add_argument("--after", type=int, default=None, help="resume after this event sequence")

    p = command("get", cmd_get, "Print a job as JSON.")
    p.add_argument("id")

    p = command("list", cmd_list, "List jobs, newest first.")
    p.add_argument("--queue")
    p.add_argument("--state", help="waiting, delayed, active, completed, failed or cancelled")
    p.add_argument("--kind", help="only jobs of this kind (with --queue)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("cancel", cmd_cancel, "Cancel a job.")
    p.add_argument("id")

    p = command("retry", cmd_retry, "Give a FAILED or CANCELLED job a fresh set of attempts.")
    p.add_argument("id")

    p = command("queues", cmd_queues, "Queues and their counts per state.")
    p.add_argument("name", nargs="?", help="one queue only")
    p.add_argument("--json", action="store_true")

    p = command("queue", cmd_queue, "One queue in detail: settings, counts, last hour, wait and run times.")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the Queue message as JSON")

    p = command("pause", cmd_pause, "Pause a queue: no new job starts (running ones finish; submits still work).")
    p.add_argument("name")

    p = command("resume", cmd_resume, "Resume a paused queue.")
    p.add_argument("name")

    p = command("queue-set", cmd_queue_set, "Change a queue's concurrency and/or per-host navigation rate limit.")
    p.add_argument("name")
    p.add_argument(
        "--concurrency", type=_non_negative, help="jobs of the queue that may run at once (0: the server default)"
    )
    p.add_argument(
        "--host-rate-limit",
        type=_non_negative,
        help="navigations per second to one host by the queue's browser jobs (0: no limit)",
    )

    p = command("clean", cmd_clean, "Delete a queue's finished jobs of one state, with their events and artifacts.")
    p.add_argument("name")
    p.add_argument("--state", required=True, choices=["completed", "failed", "cancelled"])
    p.add_argument(
        "--older-than", type=parse_age, default=None, help="only jobs that ended longer ago (90s, 15m, 1h, 2d)"
    )
    p.add_argument("--limit", type=_non_negative, default=0, help="at most this many (default: the server maximum)")

    p = command("retry-failed", cmd_retry_failed, "Give every FAILED job of a queue a fresh set of attempts.")
    p.add_argument("name")
    p.add_argument("--limit", type=_non_negative, default=0, help="at most this many (default: the server maximum)")
    p.add_argument("--priority", help="their new priority, e.g. low (default: each keeps its own)")
    p.add_argument(
        "--max-attempts", type=_non_negative, default=0, help="attempts in the fresh set (default: each its own)"
    )

    p = command(
        "watch-queue",
        cmd_watch_queue,
        "Follow every event of a queue's jobs (time, #queue sequence, job, state and progress, message) "
        "until interrupted.",
    )
    p.add_argument("name")
    p.add_argument(
        "--after", type=_non_negative, default=None, help="replay the events after this queue sequence first"
    )
    p.add_argument("--json", action="store_true", help="one JobEvent as JSON per line")

    p = command("workers", cmd_workers, "The executor workers alive now.")
    p.add_argument("--json", action="store_true", help="one Worker as JSON per line")

    p = command("kinds", cmd_kinds, "The job kinds the live executors serve, with how many workers serve each.")
    p.add_argument("--json", action="store_true", help='one {"kind", "workers"} object per line')

    from clients.cli.schedules import add_schedule_commands

    add_schedule_commands(sub, remote)

    from clients.cli.keys import add_key_commands

    add_key_commands(sub, remote)

    from clients.cli.suite_run import add_test_command

    add_test_command(sub, remote)

    from clients.cli.top import add_top_command

    add_top_command(sub, remote)

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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "queue-set" and args.concurrency is None and args.host_rate_limit is None:
        parser.error("queue-set: give --concurrency and/or --host-rate-limit")
    if args.command == "submit":
        if args.kind and args.file:
            parser.error("submit: give a job file or --kind, not both")
        if not args.kind and not args.file:
            parser.error("submit: give a job file (- for stdin), or --kind NAME [--input JSON]")
        if args.input is not None and not args.kind:
            parser.error("submit: --input goes with --kind")
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


def _wants_tls(args: argparse.Namespace) -> bool:
    try:
        tls = tls_options(args)["tls"]
    except CliError:
        tls = None
    if tls is not None:
        return bool(tls)
    scheme = str(args.target).partition("://")[0].lower()
    return bool(args.ca_cert or args.client_cert or scheme in ("grpcs", "https"))


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _hint(err: ConveyorRpcError, args: argparse.Namespace) -> str:
    if err.code == grpc.StatusCode.UNAVAILABLE and getattr(args, "target", None):
        if _wants_tls(args):
            return (f" (is a gateway serving TLS at {args.target}? Check --ca-cert, and for a gateway that "
                    "requires client certificates, --client-cert and --client-key)")
        return (f" (is a gateway running at {args.target}? `conveyor up` starts one; "
                "one that serves TLS needs --tls and perhaps --ca-cert)")
    if err.code == grpc.StatusCode.UNAUTHENTICATED:
        return " (set --api-key or CONVEYOR_API_KEY)"
    return ""


if __name__ == "__main__":
    main()
