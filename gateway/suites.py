"""Suites as Playwright Test reports them: each test's outcome from its job's state
(a pass after a failed attempt is FLAKY, not PASSED), the counts, a JUnit XML report
(testsuites/testsuite/testcase with failure, skipped and system-out, as CI systems
read it) and a one-line summary: pure functions over the store's records. And what
makes a suite's submission all or nothing (`check_room`, `withdraw`)."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import code_pb2, status_pb2
from redis.exceptions import RedisError

from conveyor.errors import ConveyorError, FieldViolation, QuotaExceeded
from conveyor.statuses import error_reason, status_bytes
from conveyor.store.job_store import JobStore
from conveyor.store.records import State
from conveyor.store.suite_store import MAX_SUITE_TESTS, MAX_TEST_NAME, MemberState, SuiteRecord, SuiteStore
from conveyor.v1 import job_pb2, job_service_pb2, suite_service_pb2
from gateway.mapping import STATE_TO_PROTO

pb = suite_service_pb2
Outcome = pb.TestOutcome
#: What of a test goes into the JUnit report (1,000 tests stay within a few MiB).
JUNIT_CONSOLE_LINES = 20
JUNIT_LINE_CHARS = 300
JUNIT_FAILURE_CHARS = 4000


def validate_suite_shape(request: pb.SubmitSuiteRequest) -> list[FieldViolation]:
    """The suite's own bounds (each test's job is validated as a SubmitJob request)."""
    v: list[FieldViolation] = []
    if not request.tests:
        v.append(FieldViolation("tests", "at least one test is required"))
    if len(request.setup) + len(request.tests) > MAX_SUITE_TESTS:
        v.append(FieldViolation("tests", f"{len(request.setup) + len(request.tests)} tests with setup; "
                                         f"at most {MAX_SUITE_TESTS}"))
        return v
    if len(request.name) > MAX_TEST_NAME:
        v.append(FieldViolation("name", f"at most {MAX_TEST_NAME} characters"))
    seen: set[str] = set()
    for group in ("setup", "tests"):
        for i, test in enumerate(getattr(request, group)):
            path = f"{group}[{i}]"
            if not test.name or len(test.name) > MAX_TEST_NAME:
                v.append(FieldViolation(f"{path}.name", f"1-{MAX_TEST_NAME} characters"))
            elif test.name in seen:
                v.append(FieldViolation(f"{path}.name", "another test of the suite has this name"))
            seen.add(test.name)
            if not test.HasField("job"):
                v.append(FieldViolation(f"{path}.job", "the test's job is required"))
            if test.job.depends_on:
                v.append(FieldViolation(f"{path}.job.depends_on", "not in a suite: its tests wait for its setup"))
            if test.job.request_id:
                v.append(FieldViolation(f"{path}.job.request_id", "not in a suite"))
    return v


def outcome_of(m: MemberState) -> Outcome.ValueType:
    if m.state is None or m.state is State.CANCELLED:
        return pb.TEST_OUTCOME_SKIPPED
    if m.state is State.COMPLETED:
        return pb.TEST_OUTCOME_FLAKY if m.attempt_in_set > 1 else pb.TEST_OUTCOME_PASSED
    if m.state is State.FAILED:
        return pb.TEST_OUTCOME_FAILED
    if m.state is State.ACTIVE or m.attempt > 0:
        return pb.TEST_OUTCOME_RUNNING  # running, or between its attempts (a retry's backoff, in line)
    return pb.TEST_OUTCOME_WAITING


def _status(data: bytes | None) -> status_pb2.Status:
    status = status_pb2.Status()
    if data:
        try:
            status.ParseFromString(data)
        except Exception:  # a stored error that does not parse says nothing
            status.Clear()
    return status


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _seconds(m: MemberState, now_ms: int) -> float:
    if not m.started_ms:
        return 0.0
    return max(0, (m.ended_ms or now_ms) - m.started_ms) / 1000


def build_suite(record: SuiteRecord, states: list[MemberState]) -> pb.Suite:
    now_ms = int(time.time() * 1000)
    suite = pb.Suite(id=record.id, name=record.name, owner=record.owner, create_time=_timestamp(record.created_ms))
    counts = suite.counts
    counts.total = len(record.members)
    field = {pb.TEST_OUTCOME_PASSED: "passed", pb.TEST_OUTCOME_FAILED: "failed", pb.TEST_OUTCOME_FLAKY: "flaky",
             pb.TEST_OUTCOME_SKIPPED: "skipped", pb.TEST_OUTCOME_RUNNING: "running",
             pb.TEST_OUTCOME_WAITING: "waiting"}
    last_end = 0
    for member, state in zip(record.members, states, strict=True):
        outcome = outcome_of(state)
        setattr(counts, field[outcome], getattr(counts, field[outcome]) + 1)
        test = suite.tests.add(name=member.name, job_id=member.job_id, outcome=outcome, setup=member.setup,
                               attempts=state.attempt,
                               state=STATE_TO_PROTO[state.state] if state.state else job_pb2.JOB_STATE_UNSPECIFIED)
        test.duration.CopyFrom(duration_pb2.Duration(nanos=0))
        test.duration.FromMilliseconds(int(_seconds(state, now_ms) * 1000))
        if outcome in (pb.TEST_OUTCOME_FAILED, pb.TEST_OUTCOME_SKIPPED, pb.TEST_OUTCOME_RUNNING):
            test.error_message = _status(state.error).message if state.state else "the test's job is gone"
        last_end = max(last_end, state.ended_ms)
    suite.done = counts.running == 0 and counts.waiting == 0
    suite.ok = suite.done and counts.failed == 0 and counts.skipped == 0
    if suite.done and last_end:
        suite.end_time.CopyFrom(_timestamp(last_end))
    return suite


def summary(suite: pb.Suite) -> str:
    c = suite.counts
    parts = [f"{c.passed} passed"]
    parts += [f"{n} {word}" for n, word in ((c.flaky, "flaky"), (c.failed, "failed"), (c.skipped, "skipped"),
                                            (c.running, "running"), (c.waiting, "waiting")) if n]
    seconds = sum(t.duration.ToMilliseconds() for t in suite.tests) / 1000
    return f"{', '.join(parts)} ({c.total} tests, {seconds:.1f}s of test time)"


def _result_of(state: MemberState) -> job_pb2.JobResult:
    """The job's result, or what its error carries of it (a failed browser job's partial result)."""
    result = job_pb2.JobResult()
    if state.result:
        result.ParseFromString(state.result)
        return result
    for detail in _status(state.error).details:
        if detail.Unpack(result):
            break
    return result


def _system_out(test: pb.SuiteTestResult, result: job_pb2.JobResult) -> str:
    lines = [f"job {test.job_id}, attempts {test.attempts}"]
    lines += [f"artifact: {a.name} ({a.content_type}, {a.size_bytes} bytes)" for a in result.artifacts]
    for i, step in enumerate(result.steps):
        status = "ok" if step.status == job_pb2.STEP_STATUS_OK else "FAILED"
        lines.append(f"step {i} {step.name or step.action}: {status} ({step.duration.ToMilliseconds()} ms)")
    lines += [f"console.{m.type}: {m.text}" for m in result.console[-JUNIT_CONSOLE_LINES:]]
    lines += [f"pageerror: {e.message}" for e in result.page_errors[:JUNIT_CONSOLE_LINES]]
    return "\n".join(line if len(line) <= JUNIT_LINE_CHARS else line[:JUNIT_LINE_CHARS - 1] + "…"
                     for line in lines[:2 * JUNIT_CONSOLE_LINES + 50])


def _xml_text(text: str) -> str:
    """Text XML 1.0 can carry (control characters dropped)."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def junit_xml(suite: pb.Suite, states: list[MemberState]) -> str:
    """The suite as JUnit XML: one <testsuite> per suite; setup tests are test cases
    too (classname `<suite>.setup`); a flaky test passes (its system-out says so and
    the suite's `flaky` property counts them), as CI systems count Playwright's."""
    c = suite.counts
    seconds = sum(t.duration.ToMilliseconds() for t in suite.tests) / 1000
    root = ET.Element("testsuites", name=suite.name, tests=str(c.total), failures=str(c.failed), errors="0",
                      time=f"{seconds:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite.name, tests=str(c.total), failures=str(c.failed),
                       errors="0", skipped=str(c.skipped + c.running + c.waiting), time=f"{seconds:.3f}",
                       timestamp=suite.create_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S"), id=suite.id)
    props = ET.SubElement(ts, "properties")
    for key, value in (("suite_id", suite.id), ("flaky", str(c.flaky)), ("passed", str(c.passed))):
        ET.SubElement(props, "property", name=key, value=value)
    for test, state in zip(suite.tests, states, strict=True):
        case = ET.SubElement(ts, "testcase", name=_xml_text(test.name),
                             classname=_xml_text(f"{suite.name}.setup" if test.setup else suite.name),
                             time=f"{test.duration.ToMilliseconds() / 1000:.3f}")
        status = _status(state.error)
        if test.outcome == pb.TEST_OUTCOME_FAILED:
            failure = ET.SubElement(case, "failure", message=_xml_text(status.message[:1000]),
                                    type=error_reason(status) or "FAILED")
            failure.text = _xml_text(status.message[:JUNIT_FAILURE_CHARS])
        elif test.outcome in (pb.TEST_OUTCOME_SKIPPED, pb.TEST_OUTCOME_RUNNING, pb.TEST_OUTCOME_WAITING):
            why = test.error_message or ("not finished" if test.outcome != pb.TEST_OUTCOME_SKIPPED else "skipped")
            ET.SubElement(case, "skipped", message=_xml_text(why[:1000]))
        out = ET.SubElement(case, "system-out")
        flaky = f"flaky: passed on attempt {test.attempts}\n" if test.outcome == pb.TEST_OUTCOME_FLAKY else ""
        out.text = _xml_text(flaky + _system_out(test, _result_of(state)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class PlannedTest:
    name: str
    setup: bool
    request: job_service_pb2.SubmitJobRequest
    path: str


# --- all or nothing ---------------------------------------------------------------------------

log = structlog.get_logger()


async def check_room(suites: SuiteStore, owner: str, tests: int, max_open: int) -> None:
    """Refuse the whole suite, before any of its jobs is made, when its tests would take
    the tenant past its quota of open jobs (`max_open`; 0: none). The store checks the
    quota job by job; checked only there, a suite refused midway left the jobs made so
    far running without a suite record."""
    if max_open <= 0:
        return
    open_now = await suites.open_jobs(owner)
    if open_now + tests <= max_open:
        return
    raise QuotaExceeded(
        f"the suite's {tests} tests would take tenant {owner!r} past its quota of {max_open} open jobs "
        f"(waiting, delayed or running; it has {open_now}): nothing was submitted"
        + ("; submit again once some have ended" if tests <= max_open else "; split the suite"),
        subject=f"tenant:{owner}",
        metadata={"tenant": owner, "limit": str(max_open), "open": str(open_now), "requested": str(tests)},
    )


def withdrawn_status(suite_id: str, refusal: ConveyorError) -> bytes:
    """The error the jobs of a refused suite are cancelled with."""
    return status_bytes(code_pb2.ABORTED, "SUITE_NOT_SUBMITTED",
                        f"cancelled: its suite was refused ({refusal.reason}: {refusal.message})",
                        suite_id=suite_id)


async def withdraw(store: JobStore, suite_id: str, job_ids: Sequence[str], refusal: ConveyorError) -> None:
    """Cancel the jobs a suite refused midway made (a race `check_room` cannot see:
    another submission of the tenant's in between, its submit rate, a deduplication
    key): the suite is then not submitted at all, and no job of it runs on. They stay
    in the history as CANCELLED (SUITE_NOT_SUBMITTED), as every ended job does."""
    error = withdrawn_status(suite_id, refusal)
    outcomes = await asyncio.gather(*(store.cancel(job_id, error) for job_id in job_ids), return_exceptions=True)
    for job_id, outcome in zip(job_ids, outcomes, strict=True):
        if isinstance(outcome, (ConveyorError, RedisError, OSError)):
            log.warning("suite_job_not_withdrawn", suite_id=suite_id, job_id=job_id, error=str(outcome)[:300])
        elif isinstance(outcome, BaseException):
            raise outcome
    log.info("suite_withdrawn", suite_id=suite_id, jobs=len(job_ids), reason=refusal.reason)
