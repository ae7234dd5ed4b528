"""`conveyor schedules` and `conveyor schedule create|get|delete|pause|resume`.

A schedule file is a CreateScheduleRequest in the protobuf JSON mapping, as JSON or
YAML:

    cron: "*/5 * * * *"
    timeZone: Europe/Berlin
    name: probe
    template: {queue: default, noop: {sleep: 0.1s}}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import timestamp_pb2

from clients.cli.files import JobFileError, _load
from clients.cli.render import print_table, to_json
from conveyor.v1 import schedule_service_pb2
from conveyor_client import AsyncConveyorClient
from conveyor_client._schedules import Schedule, to_create_schedule_request

Handler = Callable[[argparse.Namespace], Awaitable[int]]
HEADERS = ["ID", "NAME", "CRON", "TIME ZONE", "NEXT RUN", "LAST RUN", "LAST JOB", "RUNS", "PAUSED"]


def read_schedule_file(path: str) -> schedule_service_pb2.CreateScheduleRequest:
    """The request in `path` ("-" for stdin); JobFileError says what is wrong."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from err
    data = _load(text, name)
    if not isinstance(data, dict):
        raise JobFileError(f"{name}: expected an object (a CreateScheduleRequest), got {type(data).__name__}")
    try:
        return to_create_schedule_request(data)
    except ValueError as err:
        raise JobFileError(f"{name}: {err}") from err


def when(ts: timestamp_pb2.Timestamp, time_zone: str) -> str:
    """'2026-11-23 02:30 +0100': the time as the schedule's zone shows it."""
    if not ts.seconds and not ts.nanos:
        return "-"
    try:
        zone: tzinfo = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return datetime.fromtimestamp(ts.ToMilliseconds() / 1000, tz=zone).strftime("%Y-%m-%d %H:%M %z")


def schedule_row(s: Schedule) -> list[str]:
    return [
        s.id,
        s.name or "-",
        s.cron,
        s.time_zone,
        when(s.next_run_time, s.time_zone),
        when(s.last_run_time, s.time_zone),
        s.last_job_id or "-",
        str(s.run_count),
        "yes" if s.paused else "no",
    ]


def _client(args: argparse.Namespace) -> AsyncConveyorClient:
    from clients.cli.main import command_client  # its --target, API key and TLS flags

    return command_client(args)


def _next_run(s: Schedule) -> str:
    return "paused" if s.paused else f"next run {when(s.next_run_time, s.time_zone)}"


async def cmd_schedules(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        schedules = await client.list_schedules()
    if args.json:
        for s in schedules:
            print(json.dumps(json.loads(to_json(s)), separators=(",", ":")))
    elif schedules:
        print_table([schedule_row(s) for s in schedules], HEADERS, sys.stdout)
    else:
        print("no schedules", file=sys.stderr)
    return 0


async def cmd_create(args: argparse.Namespace) -> int:
    from clients.cli.main import CliError

    try:
        request = read_schedule_file(args.file)
    except JobFileError as err:
        raise CliError(str(err)) from None
    async with _client(args) as client:
        s = await client.create_schedule(request)
    if args.json:
        print(to_json(s))
    elif args.quiet:
        print(s.id)
    else:
        print(f"created schedule {s.id}: {_next_run(s)}")
    return 0


async def cmd_get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        s = await client.get_schedule(args.id)
    print(to_json(s))
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.delete_schedule(args.id)
    print(f"deleted schedule {args.id}")
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        s = await client.pause_schedule(args.id)
    print(f"schedule {s.id}: {_next_run(s)}")
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        s = await client.resume_schedule(args.id)
    print(f"schedule {s.id}: {_next_run(s)}")
    return 0


def add_schedule_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], remote: argparse.ArgumentParser
) -> None:
    """`schedules` (list) and `schedule <action>`, on the main parser's subcommands."""
    text = "List schedules: cron, time zone, next and last run."
    p = sub.add_parser("schedules", help=text, description=text, parents=[remote])
    p.set_defaults(handler=cmd_schedules)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    text = "Create, show, pause, resume or delete a schedule (cron + time zone + job template)."
    group = sub.add_parser("schedule", help=text, description=text)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text, parents=[remote])
        a.set_defaults(handler=handler)
        return a

    a = action("create", cmd_create, "Create the schedule in a JSON or YAML file (a CreateScheduleRequest).")
    a.add_argument("file", help='e.g. {"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "template": {...}}; '
                                "- for stdin")
    a.add_argument("--json", action="store_true", help="print the schedule as JSON")
    a.add_argument("--quiet", "-q", action="store_true", help="print only the schedule id")
    action("get", cmd_get, "Print a schedule as JSON.").add_argument("id")
    action("delete", cmd_delete, "Delete a schedule (the jobs it submitted stay).").add_argument("id")
    action("pause", cmd_pause, "Pause a schedule: it submits nothing until resumed.").add_argument("id")
    action("resume", cmd_resume, "Resume a schedule from now on.").add_argument("id")
