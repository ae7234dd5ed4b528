"""The acceptance suite (issue 13): a small real web app nobody here wrote (TodoMVC,
VanillaJS, vendored from the npm registry under app/), its Playwright Python tests
(playwright_suite.py) and the same tests as Conveyor browser jobs, check for check
(conveyor_suite.py), run through a real gateway and executor with real Chromium.

Every job passes; a mutated copy of each job, every check in it changed to fail and
made soft, fails naming each of its checks (step index and name) -- one batch of
48 jobs, so the mutated checks' waits overlap."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest

from conveyor.v1 import job_pb2
from tests.acceptance import conveyor_suite, playwright_suite
from tests.acceptance.app_server import serve_app
from tests.acceptance.submit import run_jobs
from tests.support.processes import Stack


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with serve_app() as url:
        yield url


def test_both_suites_have_the_same_tests_in_the_same_order() -> None:
    plain = [test.__name__ for test in playwright_suite.TESTS]
    ours = ["test_" + test.__name__ for test in conveyor_suite.TESTS]
    assert plain == ours and len(plain) == 24
    # Every Playwright test is a module-level function of the suite file, listed once.
    defined = [name for name, _ in inspect.getmembers(playwright_suite, inspect.isfunction)
               if name.startswith("test_")]
    assert sorted(defined) == sorted(plain)


def test_the_playwright_suite_passes_against_the_app(app_url: str) -> None:
    outcomes = playwright_suite.run_suite(app_url)
    assert [o.name for o in outcomes if not o.passed] == [], [o for o in outcomes if not o.passed]


@pytest.mark.timeout(300)
async def test_every_job_passes_and_every_mutated_check_fails_naming_its_step(
    make_stack: Callable[..., Stack], app_url: str
) -> None:
    stack = make_stack(
        # The mutated checks mostly wait (for their 0.5 s to end): four at once.
        CONVEYOR_EXECUTOR_SLOTS="4", CONVEYOR_BROWSER_SLOTS="4", CONVEYOR_MAX_CONCURRENT_BROWSERS="1",
        CONVEYOR_LOG_LEVEL="WARNING",
    )
    stack.start_gateway()
    stack.start_executor()
    bodies = conveyor_suite.suite(app_url)
    mutated = [conveyor_suite.mutated(body) for body in bodies]
    jobs, _seconds = await run_jobs(stack.grpc_target, bodies + mutated, timeout=240)
    originals, mutants = jobs[: len(bodies)], jobs[len(bodies):]

    failed = [(job.labels["test"], job.error.message) for job in originals
              if job.state != job_pb2.JOB_STATE_COMPLETED]
    assert failed == []
    for job, body in zip(originals, bodies, strict=True):
        # Every step ran and passed, each check included.
        assert len(job.result.steps) == len(body["browser"]["steps"])
        assert all(step.status == job_pb2.STEP_STATUS_OK for step in job.result.steps)

    total = 0
    for job, body in zip(mutants, mutated, strict=True):
        test = job.labels["test"]
        assert job.state == job_pb2.JOB_STATE_FAILED, f"{test}: a mutated copy passed"
        steps = body["browser"]["steps"]
        for index, step in enumerate(steps):
            if conveyor_suite.is_check(step):
                total += 1
                named = f"steps[{index}] {step['name']!r}"
                assert named in job.error.message, f"{test}: {named} not named in: {job.error.message}"
    assert total == sum(len(conveyor_suite.checks(body)) for body in bodies) > 80
