"""Suites through the whole system on real Chromium: a setup test logs in and saves a
session, the tests start from it; one test fails, one is flaky (fails its first
attempt, passes the retry); the suite is followed live as one thing, and its JUnit
report validates against the JUnit schema and reads back in a JUnit parser."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import junitparser
import pytest
import xmlschema
from google.protobuf import json_format

from conveyor.v1 import job_pb2, job_service_pb2, suite_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.suite_service_pb2_grpc import SuiteServiceStub
from tests.browser.suite_server import flaky_server
from tests.support.grpc_helpers import field_violations, unique_queue

pb = suite_service_pb2
JUNIT_XSD = Path(__file__).with_name("junit.xsd")


@pytest.fixture(scope="module")
def flaky_url() -> Iterator[str]:
    with flaky_server() as url:
        yield url


@pytest.fixture
def suites(channel: grpc.aio.Channel) -> SuiteServiceStub:
    return SuiteServiceStub(channel)


def suite_test(name: str, job: dict[str, Any]) -> pb.SuiteTest:
    test = pb.SuiteTest(name=name)
    json_format.ParseDict(job, test.job)
    return test


def shop_suite(pages_url: str, flaky_url: str, queue: str, session: str) -> pb.SubmitSuiteRequest:
    page = f"{pages_url}/session_login.html"
    logged_in = {"target": {"selector": "#who"}, "textEquals": "logged in as ada"}
    return pb.SubmitSuiteRequest(
        name="shop",
        setup=[suite_test("log in", {"queue": queue, "browser": {"session": {"save": session}, "steps": [
            {"navigate": {"url": page}},
            {"fill": {"target": {"selector": "#user"}, "text": "ada"}},
            {"click": {"target": {"selector": "#go"}}},
            {"expect": logged_in}]}})],
        tests=[
            suite_test("starts logged in", {"queue": queue, "browser": {"session": {"use": session}, "steps": [
                {"navigate": {"url": page}}, {"expect": logged_in}]}}),
            suite_test("flaky", {"queue": queue, "maxAttempts": 2, "browser": {"steps": [
                {"navigate": {"url": f"{flaky_url}/flaky/{uuid.uuid4().hex}"}},
                # (3 s, not 1: its retry must pass on a loaded machine too; CI saw both attempts fail once.)
                {"timeout": "3s", "expect": {"target": {"selector": "#state"}, "textEquals": "ok"}}]}}),
            suite_test("fails", {"queue": queue, "maxAttempts": 1, "browser": {
                "recording": {"trace": "TRACE_MODE_RETAIN_ON_FAILURE"}, "steps": [
                    {"navigate": {"url": page}},
                    {"name": "wrong user", "timeout": "1s",
                     "expect": {"target": {"selector": "#who"}, "textEquals": "logged in as eve"}}]}}),
            suite_test("anonymous without the session", {"queue": queue, "browser": {"steps": [
                {"navigate": {"url": page}},
                {"expect": {"target": {"selector": "#who"}, "textEquals": "anonymous"}}]}}),
        ],
    )


async def test_a_suite_with_setup_a_failing_and_a_flaky_test(
    suites: SuiteServiceStub, jobs: JobServiceStub, pages_url: str, flaky_url: str
) -> None:
    queue = unique_queue("suite")
    submitted = await suites.SubmitSuite(shop_suite(pages_url, flaky_url, queue, f"shop-{uuid.uuid4().hex[:6]}"))
    assert [t.name for t in submitted.tests] == ["log in", "starts logged in", "flaky", "fails",
                                                 "anonymous without the session"]
    assert submitted.tests[0].setup and submitted.tests[0].position == 1
    # The tests wait for the setup (DELAYED, no position yet).
    assert {t.state for t in submitted.tests[1:]} == {job_pb2.JOB_STATE_DELAYED}

    updates: list[pb.Suite] = []

    async def follow() -> None:
        async for message in suites.WatchSuite(pb.WatchSuiteRequest(id=submitted.suite_id)):
            if message.WhichOneof("kind") == "suite":
                updates.append(message.suite)

    await asyncio.wait_for(follow(), 120)
    first, final = updates[0], updates[-1]
    assert first.counts.total == 5 and not first.done
    assert len(updates) >= 3  # live: the suite was sent again as its tests moved on
    ended = [u.counts.passed + u.counts.flaky + u.counts.failed + u.counts.skipped for u in updates]
    assert ended == sorted(ended) and ended[-1] == 5
    assert any(u.counts.running for u in updates)
    assert final.done and not final.ok
    c = final.counts
    said = [(t.name, t.attempts, t.error_message) for t in final.tests]  # shown if the counts are wrong
    assert (c.passed, c.flaky, c.failed, c.skipped, c.running, c.waiting) == (3, 1, 1, 0, 0, 0), said
    outcomes = {t.name: t.outcome for t in final.tests}
    assert outcomes == {"log in": pb.TEST_OUTCOME_PASSED, "starts logged in": pb.TEST_OUTCOME_PASSED,
                        "flaky": pb.TEST_OUTCOME_FLAKY, "fails": pb.TEST_OUTCOME_FAILED,
                        "anonymous without the session": pb.TEST_OUTCOME_PASSED}
    flaky = next(t for t in final.tests if t.name == "flaky")
    assert flaky.attempts == 2 and flaky.state == job_pb2.JOB_STATE_COMPLETED
    fails = next(t for t in final.tests if t.name == "fails")
    assert "wrong user" in fails.error_message

    # Each member job carries the suite's labels.
    job = (await jobs.GetJob(job_service_pb2.GetJobRequest(id=flaky.job_id))).job
    assert job.labels["suite_id"] == submitted.suite_id and job.labels["suite_test"] == "flaky"

    got = (await suites.GetSuite(pb.GetSuiteRequest(id=submitted.suite_id))).suite
    assert got.counts == final.counts

    report = await suites.GetSuiteReport(pb.GetSuiteReportRequest(id=submitted.suite_id))
    assert report.summary.startswith("3 passed, 1 flaky, 1 failed (5 tests, ")
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(report.junit_xml)  # raises if it does not fit
    xml = junitparser.JUnitXml.fromstring(report.junit_xml)
    (suite,) = list(xml)
    assert suite.name == "shop" and suite.tests == 5 and suite.failures == 1 and suite.errors == 0
    cases = {case.name: case for case in suite}
    assert cases["log in"].classname == "shop.setup" and cases["flaky"].classname == "shop"
    assert cases["flaky"].is_passed and "flaky: passed on attempt 2" in (cases["flaky"].system_out or "")
    (failure,) = cases["fails"].result
    assert isinstance(failure, junitparser.Failure) and failure.type == "EXPECTATION_FAILED"
    assert "wrong user" in (failure.message or "")
    assert "artifact: trace-1.zip" in (cases["fails"].system_out or "")  # the kept trace, for the CI user
    assert all(cases[n].is_passed for n in ("log in", "starts logged in", "anonymous without the session"))


async def test_a_failed_setup_skips_the_tests(suites: SuiteServiceStub) -> None:
    queue = unique_queue("suite")
    noop = {"queue": queue, "noop": {}}
    submitted = await suites.SubmitSuite(pb.SubmitSuiteRequest(
        setup=[suite_test("broken setup", {"queue": queue, "maxAttempts": 1, "noop": {"failFirstAttempts": 1}})],
        tests=[suite_test("a", noop), suite_test("b", noop)]))
    final = None
    async for message in suites.WatchSuite(pb.WatchSuiteRequest(id=submitted.suite_id)):
        if message.WhichOneof("kind") == "suite":
            final = message.suite
    assert final is not None and final.done and not final.ok
    assert (final.counts.failed, final.counts.skipped, final.counts.passed) == (1, 2, 0)
    report = await suites.GetSuiteReport(pb.GetSuiteReportRequest(id=submitted.suite_id))
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(report.junit_xml)
    (suite,) = list(junitparser.JUnitXml.fromstring(report.junit_xml))
    assert suite.skipped == 2 and all(isinstance(case.result[0], junitparser.Skipped)
                                      for case in suite if case.name in ("a", "b"))


async def test_a_bad_test_refuses_the_whole_suite_naming_it(suites: SuiteServiceStub, jobs: JobServiceStub) -> None:
    queue = unique_queue("suite")
    request = pb.SubmitSuiteRequest(tests=[
        suite_test("good", {"queue": queue, "noop": {}}),
        suite_test("bad", {"queue": queue, "browser": {"steps": [{"navigate": {"url": "ftp://x"}}]}}),
        suite_test("good", {"queue": queue, "noop": {}}),
    ])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suites.SubmitSuite(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = field_violations(caught.value)
    assert "tests[2].name" in fields  # a duplicate name
    request.tests[2].name = "good too"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suites.SubmitSuite(request)
    assert set(field_violations(caught.value)) == {"tests[1].job.browser.steps[0].navigate.url"}
    listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest(queue=queue))
    assert list(listed.jobs) == []  # nothing of it was submitted
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await suites.GetSuite(pb.GetSuiteRequest(id="nosuchsuite"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
