"""`conveyor test suite.yaml [--junit report.xml]`: run a suite through the queue as
Playwright Test runs one, only distributed. Submits it in one call (the suite id and
every test's position come back at once), shows each test's outcome as it ends and a
progress line, writes the JUnit XML report, prints the summary and exits 0 only when
no test failed or was skipped (a flaky test, passed on a retry, does not fail the run).

The suite file is described in clients/python/conveyor_client/_suites.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from clients.cli.files import JobFileError, _load
from conveyor.v1 import suite_service_pb2
from conveyor_client._suites import AsyncSuites, suite_request

pb = suite_service_pb2
MARKS = {pb.TEST_OUTCOME_PASSED: "ok", pb.TEST_OUTCOME_FLAKY: "flaky", pb.TEST_OUTCOME_FAILED: "FAILED",
         pb.TEST_OUTCOME_SKIPPED: "skipped"}
ENDED = set(MARKS)


def read_suite_file(path: str) -> pb.SubmitSuiteRequest:
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from err
    try:
        return suite_request(_load(text, name))
    except ValueError as err:
        raise JobFileError(f"{name}: {err}") from err


def counts_line(suite: pb.Suite) -> str:
    c = suite.counts
    ended = c.passed + c.flaky + c.failed + c.skipped
    parts = [f"{c.passed} passed"] + [f"{n} {w}" for n, w in ((c.flaky, "flaky"), (c.failed, "failed"),
                                                               (c.skipped, "skipped"), (c.running, "running"),
                                                               (c.waiting, "waiting")) if n]
    return f"[{ended}/{c.total}] " + ", ".join(parts)


def test_line(test: pb.SuiteTestResult) -> str:
    seconds = test.duration.ToMilliseconds() / 1000
    line = f"  {MARKS[test.outcome]:>7}  {test.name} ({seconds:.1f}s"
    line += f", attempt {test.attempts})" if test.attempts > 1 else ")"
    if test.outcome in (pb.TEST_OUTCOME_FAILED, pb.TEST_OUTCOME_SKIPPED) and test.error_message:
        line += "\n           " + test.error_message.splitlines()[0][:300]
    return line


async def run_suite(suites: AsyncSuites, request: pb.SubmitSuiteRequest, out: TextIO,
                    junit: str | None = None) -> int:
    submitted = await suites.submit(request)
    print(f"suite {submitted.suite_id}: {len(submitted.tests)} tests submitted", file=out, flush=True)
    for queued in submitted.tests:
        where = f"position {queued.position}" if queued.position else "after setup" if not queued.setup else "queued"
        print(f"  queued   {queued.name} (job {queued.job_id}, {where})", file=out, flush=True)
    shown: set[str] = set()
    last_counts = ""
    suite: pb.Suite | None = None
    async for message in suites.watch(submitted.suite_id):
        if message.WhichOneof("kind") != "suite":
            continue
        suite = message.suite
        for test in suite.tests:
            if test.outcome in ENDED and test.job_id not in shown:
                shown.add(test.job_id)
                print(test_line(test), file=out, flush=True)
        line = counts_line(suite)
        if line != last_counts:
            last_counts = line
            print(line, file=out, flush=True)
    report = await suites.report(submitted.suite_id)
    if junit:
        try:
            await asyncio.to_thread(Path(junit).write_text, report.junit_xml)
        except OSError as err:
            print(f"error: --junit {junit}: {err.strerror or err}", file=sys.stderr)
            return 1
        print(f"JUnit report: {junit}", file=out)
    print(report.summary, file=out, flush=True)
    return 0 if report.suite.ok else 1


async def cmd_test(args: argparse.Namespace) -> int:
    from clients.cli.main import CliError, command_client  # its --target, API key and TLS flags

    try:
        request = read_suite_file(args.file)
    except JobFileError as err:
        raise CliError(str(err)) from None
    if args.queue:
        for test in [*request.setup, *request.tests]:
            test.job.queue = args.queue
    if args.name:
        request.name = args.name
    async with command_client(args) as client:
        return await run_suite(AsyncSuites(client), request, sys.stdout, args.junit)


def add_test_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], remote: argparse.ArgumentParser
) -> None:
    text = ("Run a suite of tests (a YAML or JSON file: name, defaults, setup, tests; each test a job) through "
            "the queue: live progress, a JUnit report, exit 1 when a test failed.")
    p = sub.add_parser("test", help=text, description=text, parents=[remote])
    p.set_defaults(handler=cmd_test)
    p.add_argument("file", help="the suite file; - for stdin")
    p.add_argument("--junit", metavar="FILE", help="write the JUnit XML report here")
    p.add_argument("--queue", help="run every test in this queue")
    p.add_argument("--name", help="the suite's name (default: the file's `name`)")
