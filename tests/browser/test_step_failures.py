"""How steps fail: errors that name the step, its action and selector and say why,
classified retryable or not; cancellation that closes the context."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from conveyor.artifacts import LocalArtifactStore
from conveyor.kinds.errors import JobError
from conveyor.settings import Settings
from conveyor.v1 import job_pb2
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from tests.browser.helpers import Progress, browser_task, new_job_id, run_steps


async def failure_of(runner: BrowserTaskRunner, steps: list[dict[str, Any]], **kwargs: Any) -> BrowserTaskFailed:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, steps, **kwargs)
    return caught.value


async def test_element_not_found_tries_fallbacks_within_one_timeout(
    runner: BrowserTaskRunner, pages_url: str
) -> None:
    error = await failure_of(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {
                "name": "press the button",
                "timeout": "0.6s",
                "click": {"target": {"selector": "#nope", "fallbacks": ["#nope-2", "text=Nope"]}},
            },
        ],
    )
    assert (error.reason, error.retryable, error.code) == ("ELEMENT_NOT_FOUND", True, code_pb2.NOT_FOUND)
    assert error.message.startswith("steps[1] 'press the button' (click '#nope'): no element matched")
    assert "'#nope-2'" in error.message and "'text=Nope'" in error.message and "0.6s" in error.message
    assert error.metadata == {
        "step_index": "1", "step_name": "press the button", "action": "click", "selector": "#nope"
    }
    assert [s.status for s in error.result.steps] == [job_pb2.STEP_STATUS_OK, job_pb2.STEP_STATUS_FAILED]
    assert error.result.steps[1].error == error.message
    # Three candidates share the step's 0.6 s instead of taking 0.6 s each.
    assert 0.6 <= error.result.steps[1].duration.ToNanoseconds() / 1e9 < 1.2


async def test_action_timeout_on_an_element_that_never_becomes_actionable(
    runner: BrowserTaskRunner, pages_url: str
) -> None:
    error = await failure_of(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/menu.html"}},
            {"timeout": "1s", "click": {"target": {"selector": "#item-open"}}},  # hidden until hover
        ],
    )
    assert (error.reason, error.retryable) == ("STEP_TIMEOUT", True)
    assert "steps[1] 'click #item-open' (click '#item-open'): timed out after 1s" in error.message
    assert error.metadata["matched_selector"] == "#item-open"


async def test_wait_for_state_times_out(runner: BrowserTaskRunner, pages_url: str) -> None:
    error = await failure_of(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/late.html?delay=60000"}},
            {"timeout": "0.4s", "wait": {"target": {"selector": "#spinner"}, "state": "hidden"}},
        ],
    )
    assert (error.reason, error.retryable) == ("STEP_TIMEOUT", True)
    assert "'#spinner' did not become hidden" in error.message


async def test_navigation_timeout_is_retryable(runner: BrowserTaskRunner, pages_url: str) -> None:
    error = await failure_of(
        runner, [{"timeout": "0.5s", "navigate": {"url": f"{pages_url}/slow?ms=5000"}}]
    )
    assert (error.reason, error.retryable, error.code) == (
        "NAVIGATION_TIMEOUT", True, code_pb2.DEADLINE_EXCEEDED
    )
    assert error.message.startswith("steps[0] 'navigate ")


@pytest.mark.parametrize(
    ("expectation", "expected", "actual"),
    [
        ({"textContains": "Hello Bob"}, "text of '#out' containing 'Hello Bob'", "actual 'Hello Ada'"),
        ({"textEquals": "Hello"}, "text of '#out' equal to 'Hello'", "actual 'Hello Ada'"),
        ({"hidden": True}, "'#out' hidden", "actual 'visible'"),
    ],
)
async def test_expectation_not_met_says_what_it_found(
    runner: BrowserTaskRunner, pages_url: str, expectation: dict[str, Any], expected: str, actual: str
) -> None:
    error = await failure_of(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
            {"click": {"target": {"selector": "#submit"}}},
            {"timeout": "0.4s", "expect": {"target": {"selector": "#out"}, **expectation}},
        ],
    )
    assert (error.reason, error.retryable) == ("EXPECTATION_FAILED", True)
    assert f"expectation not met: expected {expected}, {actual}" in error.message
    assert error.message.startswith("steps[3] 'expect #out' (expect '#out'):")


async def test_expectations_of_value_count_title_and_url(runner: BrowserTaskRunner, pages_url: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"target": {"selector": "#email"}, "value": "x@y.z"}, "actual 'someone@example.org'"),
        ({"target": {"selector": "input"}, "count": 5}, "actual 2"),
        ({"titleContains": "Nope"}, "actual 'Form'"),
        ({"urlContains": "nope.html"}, "form.html"),
    ]
    for expectation, actual in cases:
        error = await failure_of(
            runner,
            [{"navigate": {"url": f"{pages_url}/form.html"}}, {"timeout": "1s", "expect": expectation}],
        )
        assert error.reason == "EXPECTATION_FAILED"
        assert actual in error.message, error.message


async def test_invalid_selector_fails_before_any_step_and_is_not_retryable(
    runner: BrowserTaskRunner, pages_url: str
) -> None:
    for bad in ["#a[", "xpath=//p[", "nosuchengine=x"]:
        error = await failure_of(
            runner,
            [
                {"navigate": {"url": f"{pages_url}/form.html"}},
                {"fill": {"target": {"selector": "#name"}, "text": "x"}},
                {"click": {"target": {"selector": "#submit", "fallbacks": [bad]}}},
            ],
        )
        assert (error.reason, error.retryable, error.code) == (
            "INVALID_SELECTOR", False, code_pb2.INVALID_ARGUMENT
        )
        assert error.message.startswith(f"steps[2] 'click #submit' (click '#submit'): invalid selector {bad!r}")
        assert len(error.result.steps) == 0  # nothing ran


async def test_invalid_step_values_are_not_retryable(runner: BrowserTaskRunner, pages_url: str) -> None:
    invalid: list[dict[str, Any]] = [
        {"click": {"target": {"selector": "#submit"}, "button": "sideways"}},
        {"navigate": {"url": f"{pages_url}/form.html", "waitUntil": "later"}},
        {"wait": {}},
        {"scroll": {}},
        {"extract": {"target": {"selector": "#out"}}},
    ]
    for step in invalid:
        error = await failure_of(runner, [{"navigate": {"url": f"{pages_url}/form.html"}}, step])
        assert (error.reason, error.retryable) == ("INVALID_STEP", False), step


async def test_missing_upload_file_is_not_retryable(runner: BrowserTaskRunner, pages_url: str) -> None:
    error = await failure_of(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/upload.html"}},
            {"upload": {"target": {"selector": "#file"}, "files": ["secret.txt"]}},
        ],
        files=[{"name": "report.pdf", "content": base64.b64encode(b"pdf").decode()}],
    )
    assert (error.reason, error.retryable) == ("UPLOAD_FILE_MISSING", False)
    assert "'secret.txt' not among browser.files" in error.message


async def test_files_over_the_limit_are_refused(
    pool: BrowserPool, artifacts: LocalArtifactStore, settings: Settings
) -> None:
    small = BrowserTaskRunner(pool, artifacts, settings.model_copy(update={"max_file_bytes": 10}))
    task = browser_task(
        [{"wait": {"duration": "0s"}}],
        files=[{"name": "big.bin", "content": base64.b64encode(b"x" * 11).decode()}],
    )
    with pytest.raises(BrowserTaskFailed) as caught:
        await small.run(new_job_id(), task, Progress())
    assert (caught.value.reason, caught.value.retryable) == ("INVALID_FILES", False)


async def test_artifact_bytes_over_the_limit_are_not_retryable(
    pool: BrowserPool, artifacts: LocalArtifactStore, settings: Settings, pages_url: str
) -> None:
    small = BrowserTaskRunner(pool, artifacts, settings.model_copy(update={"max_artifact_bytes": 100}))
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(small, [{"navigate": {"url": f"{pages_url}/form.html"}}, {"screenshot": {}}])
    error = caught.value
    assert (error.reason, error.retryable, error.code) == (
        "ARTIFACT_TOO_LARGE", False, code_pb2.RESOURCE_EXHAUSTED
    )
    assert "limit of 100 bytes" in error.message and error.result.artifacts == []


async def test_task_level_limits(runner: BrowserTaskRunner, settings: Settings) -> None:
    with pytest.raises(JobError) as caught:
        await run_steps(runner, [])
    assert (caught.value.reason, caught.value.retryable) == ("INVALID_TASK", False)
    too_many: list[dict[str, Any]] = [{"wait": {"duration": "0s"}}] * (settings.max_steps + 1)
    with pytest.raises(JobError) as caught:
        await run_steps(runner, too_many)
    assert (caught.value.reason, caught.value.retryable) == ("TOO_MANY_STEPS", False)


async def test_cancelling_the_run_cancels_the_step_and_closes_the_context(
    runner: BrowserTaskRunner, pool: BrowserPool, pages_url: str, tmp_path: Path
) -> None:
    waiting = asyncio.Event()

    async def report(progress: int, message: str, step_index: int, step_name: str) -> None:
        if step_index == 1 and "done" not in message:
            waiting.set()

    job = asyncio.create_task(
        runner.run(
            new_job_id(),
            browser_task(
                [
                    {"navigate": {"url": f"{pages_url}/form.html"}},
                    {"name": "long wait", "wait": {"duration": "60s"}},
                ]
            ),
            report,
        )
    )
    async with asyncio.timeout(10):
        await waiting.wait()
        open_before = pool.stats().open_contexts
        assert open_before >= 1
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    assert pool.stats().open_contexts == open_before - 1
