"""`conveyor test suite.yaml --junit report.xml` against a real gateway and executor:
live progress (a test's outcome is printed while another still runs), a JUnit file
that validates against the JUnit schema, exit 1 when a test fails and 0 when every
test passed (a flaky one included); bad files are refused before any call."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import junitparser
import xmlschema
import yaml

from conveyor.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support.grpc_helpers import unique_queue
from tests.support.processes import Stack
from tests.test_cli import CONVEYOR, ROOT, run_cli

JUNIT_XSD = Path(__file__).parent / "browser" / "junit.xsd"


def cli_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_GRPC_ADDR"] = stack.grpc_target
    return env


def write_suite(path: Path, *, failing: bool) -> None:
    tests = [
        {"name": "quick", "noop": {}},
        {"name": "slow", "noop": {"sleep": "4s"}},
        {"name": "flaky", "maxAttempts": 2, "noop": {"failFirstAttempts": 1}},
    ]
    if failing:
        tests.append({"name": "broken", "maxAttempts": 1, "noop": {"failFirstAttempts": 1}})
    path.write_text(yaml.safe_dump({
        "name": "cli suite",
        "defaults": {"queue": unique_queue("cli-suite"), "maxAttempts": 1},  # tests may override
        "tests": tests,
    }))


def test_conveyor_test_shows_live_progress_writes_junit_and_exits_1_on_a_failure(
    stack: Stack, tmp_path: Path
) -> None:
    suite, report = tmp_path / "suite.yaml", tmp_path / "report.xml"
    write_suite(suite, failing=True)
    proc = subprocess.Popen([CONVEYOR, "test", str(suite), "--junit", str(report)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(stack), cwd=ROOT)
    lines: list[str] = []
    slow_id = ""
    slow_running_when_quick_passed = None
    try:
        assert proc.stdout is not None
        with grpc.insecure_channel(stack.grpc_target) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            for line in proc.stdout:  # as the CLI prints them
                lines.append(line.rstrip("\n"))
                if "queued   slow (job " in line:
                    slow_id = line.split("(job ", 1)[1].split(",", 1)[0]
                if line.strip().startswith("ok  quick") and slow_id:
                    slow = jobs.GetJob(job_service_pb2.GetJobRequest(id=slow_id)).job
                    slow_running_when_quick_passed = slow.state not in (
                        job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "\n".join(lines)
    assert code == 1, out + (proc.stderr.read() if proc.stderr else "")
    assert lines[0].startswith("suite ") and lines[0].endswith(": 4 tests submitted")
    assert slow_running_when_quick_passed is True, out  # progress is live, not printed at the end
    assert any(line.strip().startswith("FAILED  broken") for line in lines), out
    assert any(line.strip().startswith("flaky  flaky") and "attempt 2" in line for line in lines), out
    counts = [line for line in lines if line.startswith("[")]
    assert counts[-1] == "[4/4] 2 passed, 1 flaky, 1 failed", out
    assert lines[-1].startswith("2 passed, 1 flaky, 1 failed (4 tests, ")
    assert f"JUnit report: {report}" in lines

    xml = report.read_text()
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(xml)
    (testsuite,) = list(junitparser.JUnitXml.fromfile(str(report)))
    assert testsuite.name == "cli suite" and testsuite.tests == 4 and testsuite.failures == 1
    results = {case.name: [type(r).__name__ for r in case.result] for case in testsuite}
    assert results == {"quick": [], "slow": [], "flaky": [], "broken": ["Failure"]}


def test_conveyor_test_exits_0_when_every_test_passed_flaky_included(stack: Stack, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    write_suite(suite, failing=False)
    started = time.monotonic()
    result = run_cli("test", str(suite), env=cli_env(stack), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("2 passed, 1 flaky (3 tests, ")
    assert time.monotonic() - started < 60


def test_a_bad_suite_file_exits_1_naming_the_test(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tests": [{"name": "ok", "noop": {}}, {"name": "x", "noop": {"sleep": 5}}]}))
    result = run_cli("test", str(bad), "--target", "127.0.0.1:1")  # refused before any call
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {bad}: tests[1] (x): ")
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"name": "nothing", "tests": []}))
    result = run_cli("test", str(empty), "--target", "127.0.0.1:1")
    assert result.returncode == 1 and "tests: at least one test" in result.stderr
