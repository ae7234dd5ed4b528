"""Web-first assertions on real Chromium: each one passing (after late changes to
the page: they wait), negated, and failing with an error that names the step and
says what was expected and what the page had; soft assertions."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from conveyor.v1 import job_pb2, job_service_pb2
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from gateway.validation import Limits, validate_submit
from tests.browser.helpers import run_steps

LIMITS = Limits(max_steps=200, max_file_bytes=5 << 20, max_request_bytes=8 << 20, max_job_timeout_ms=3_600_000)
S = {"selector": "#status"}
TODOS = {"locator": {"css": "#todos li"}}


def sel(selector: str) -> dict[str, str]:
    return {"selector": selector}


PASSING: list[dict[str, Any]] = [
    # text: string (waits for "Ready"), contains, regex, ignoreCase, a list in order
    {"expect": {"target": S, "text": {"value": "Ready"}}},
    {"expect": {"target": S, "text": {"value": "ead", "contains": True}}},
    {"expect": {"target": S, "text": {"value": "^R.a", "regex": True}}},
    {"expect": {"target": S, "text": {"value": "READY", "ignoreCase": True}}},
    {"expect": {"target": TODOS, "text": {"values": ["Buy milk", "Walk dog", "Write code", "Ship it"]}}},
    {"expect": {"target": TODOS, "text": {"values": ["milk", "dog", "code", "Ship"], "contains": True}}},
    {"expect": {"target": TODOS, "text": {"values": ["^Buy", "dog$", "Write", "it"], "regex": True}}},
    {"expect": {"target": S, "text": {"value": "Loading"}, "not": True}},
    # v1 forms, negated too
    {"expect": {"target": S, "textEquals": "Ready"}},
    {"expect": {"target": S, "textContains": "Load", "not": True}},
    # value(s)
    {"expect": {"target": sel("#name"), "value": "Ada Lovelace"}},
    {"expect": {"target": sel("#name"), "inputValue": {"value": "^Ada", "regex": True}}},
    {"expect": {"target": sel("#name"), "inputValue": {"value": "ada lovelace", "ignoreCase": True}}},
    {"expect": {"target": sel("#name"), "inputValue": {"value": "Grace"}, "not": True}},
    {"expect": {"target": sel("#sizes"), "inputValues": {"values": ["s", "l"]}}},
    # attribute: with a value, a regex, present, absent
    {"expect": {"target": sel("#docs"), "attribute": {"name": "href", "value": {"value": "/docs/intro"}}}},
    {"expect": {"target": sel("#docs"), "attribute": {"name": "href", "value": {"value": "^/docs", "regex": True}}}},
    {"expect": {"target": sel("#docs"), "attribute": {"name": "data-kind"}}},
    {"expect": {"target": sel("#docs"), "attribute": {"name": "target"}, "not": True}},
    # class: whole string, regex, contains, list per element
    {"expect": {"target": S, "class": {"value": "status warn"}}},
    {"expect": {"target": S, "class": {"value": "\\bwarn\\b", "regex": True}}},
    {"expect": {"target": S, "class": {"value": "warn", "contains": True}}},
    {"expect": {"target": TODOS, "class": {"values": ["todo", "todo completed", "todo", "todo"]}}},
    {"expect": {"target": S, "class": {"value": "error", "contains": True}, "not": True}},
    # CSS
    {"expect": {"target": S, "css": {"name": "color", "value": {"value": "rgb(255, 0, 0)"}}}},
    {"expect": {"target": S, "css": {"name": "display", "value": {"value": "none"}}, "not": True}},
    # count
    {"expect": {"target": TODOS, "count": 4}},
    {"expect": {"target": TODOS, "count": 3, "not": True}},
    # states
    {"expect": {"target": sel("#opt"), "checked": True}},
    {"expect": {"target": sel("#opt"), "checked": False, "not": True}},
    {"expect": {"target": sel("#name"), "enabled": True}},
    {"expect": {"target": sel("#off"), "disabled": True}},
    {"expect": {"target": sel("#off"), "enabled": True, "not": True}},
    {"expect": {"target": sel("#name"), "editable": True}},
    {"expect": {"target": sel("#readonly"), "editable": True, "not": True}},
    {"click": {"target": sel("#name")}},
    {"expect": {"target": sel("#name"), "focused": True}},
    {"expect": {"target": sel("#readonly"), "focused": True, "not": True}},
    {"expect": {"target": S, "visible": True}},
    {"expect": {"target": sel("#nothing-here"), "hidden": True}},
    {"expect": {"target": S, "hidden": True, "not": True}},
    {"expect": {"target": sel("#toast"), "attached": False}},
    {"expect": {"target": S, "attached": True}},
    {"expect": {"target": S, "inViewport": True}},
    {"expect": {"target": sel("#far"), "inViewport": True, "not": True}},
    {"expect": {"target": sel("#empty"), "empty": True}},
    {"expect": {"target": S, "empty": True, "not": True}},
    # page URL and title
    {"expect": {"title": {"value": "Assertions ready"}}},
    {"expect": {"title": {"value": "ready$", "regex": True}}},
    {"expect": {"title": {"value": "Loading"}, "not": True}},
    {"expect": {"url": {"value": "/assertions\\.html$", "regex": True}}},
    {"expect": {"url": {"value": "http://nowhere.invalid/"}, "not": True}},
    {"expect": {"titleContains": "ready"}},
    {"expect": {"urlContains": "nope", "not": True}},
]


async def test_every_assertion_passes_and_negates(runner: BrowserTaskRunner, pages_url: str) -> None:
    steps = [{"navigate": {"url": f"{pages_url}/assertions.html"}}, *PASSING]
    result = await run_steps(runner, steps)
    assert [s.status for s in result.steps] == [job_pb2.STEP_STATUS_OK] * len(steps)


# (the failing check, what its error must say); run as soft checks in one job.
FAILING: list[tuple[dict[str, Any], str]] = [
    ({"target": S, "text": {"value": "Done"}}, "expected text of '#status' equal to 'Done', actual 'Ready'"),
    ({"target": S, "text": {"value": "^Err", "regex": True}}, "expected text of '#status' matching /^Err/"),
    ({"target": S, "text": {"value": "Ready"}, "not": True}, "expected not text of '#status' equal to 'Ready'"),
    ({"target": TODOS, "text": {"values": ["Buy milk", "Write code"]}},
     "expected texts of locator('#todos li') equal to ['Buy milk', 'Write code'], "
     "actual ['Buy milk', 'Walk dog', 'Write code', 'Ship it']"),
    ({"target": sel("#name"), "inputValue": {"value": "Grace"}}, "actual 'Ada Lovelace'"),
    ({"target": sel("#sizes"), "inputValues": {"values": ["m"]}}, "actual ['s', 'l']"),
    ({"target": sel("#docs"), "attribute": {"name": "href", "value": {"value": "/api"}}}, "actual '/docs/intro'"),
    ({"target": S, "class": {"value": "status"}}, "expected class of '#status' 'status', actual 'status warn'"),
    ({"target": S, "css": {"name": "color", "value": {"value": "rgb(0, 0, 0)"}}}, "actual 'rgb(255, 0, 0)'"),
    ({"target": TODOS, "count": 2}, "expected 2 element(s) matching locator('#todos li'), actual 4"),
    ({"target": sel("#opt"), "checked": False}, "expected '#opt' unchecked, actual 'checked'"),
    ({"target": sel("#off"), "enabled": True}, "expected '#off' enabled, actual 'disabled'"),
    ({"target": sel("#readonly"), "editable": True}, "actual 'not editable'"),
    ({"target": sel("#name"), "focused": True}, "expected '#name' focused, actual 'not focused'"),
    ({"target": sel("#toast"), "attached": True}, "expected '#toast' attached, actual 'detached'"),
    ({"target": sel("#far"), "inViewport": True}, "actual 'outside it'"),
    ({"target": S, "empty": True}, "expected '#status' empty, actual 'Ready'"),
    ({"target": {"locator": {"role": "button", "name": "Nope"}}, "visible": True},
     "expected getByRole('button', { name: 'Nope' }) visible, actual '<no element>'"),
    ({"url": {"value": "/other.html"}}, "expected URL equal to '/other.html', actual 'http://"),
    ({"title": {"value": "Nope"}}, "expected title equal to 'Nope', actual 'Assertions ready'"),
]


async def test_failed_checks_say_expected_and_actual_and_soft_ones_all_report(
    runner: BrowserTaskRunner, pages_url: str
) -> None:
    steps: list[dict[str, Any]] = [
        {"navigate": {"url": f"{pages_url}/assertions.html"}},
        {"expect": {"target": S, "text": {"value": "Ready"}}},  # the late changes are in
    ]
    first = len(steps)
    for i, (check, _) in enumerate(FAILING):
        steps.append({"name": f"check {i}", "soft": True, "timeout": "0.3s", "expect": check})
    steps.append({"extract": {"target": S, "key": "after"}})  # the job went on
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, steps)
    error = caught.value
    assert (error.reason, error.code) == ("EXPECTATION_FAILED", 9)  # FAILED_PRECONDITION
    named = ", ".join(f"steps[{first + i}]" for i in range(len(FAILING)))
    assert error.message.startswith(
        f"{len(FAILING)} soft checks failed ({named}): steps[{first}] 'check 0' (expect '#status'): "
        "expectation not met: expected text of '#status' equal to 'Done', actual 'Ready'; "
    ), error.message
    assert error.metadata["failed_steps"] == ",".join(str(first + i) for i in range(len(FAILING)))
    outcomes = error.result.steps
    assert len(outcomes) == len(steps)
    assert outcomes[-1].status == job_pb2.STEP_STATUS_OK
    assert error.result.values["after"].string_value == "Ready"
    for i, (_, says) in enumerate(FAILING):
        outcome = outcomes[first + i]
        assert outcome.status == job_pb2.STEP_STATUS_FAILED
        assert outcome.error.startswith(f"steps[{first + i}] 'check {i}' (expect"), outcome.error
        assert "expectation not met: expected " in outcome.error, outcome.error
        assert says in outcome.error, (says, outcome.error)


async def test_a_hard_failure_after_soft_ones_names_them(runner: BrowserTaskRunner, pages_url: str) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/assertions.html"}},
            {"soft": True, "timeout": "0.3s", "expect": {"title": {"value": "Nope"}}},
            {"timeout": "0.3s", "expect": {"target": S, "text": {"value": "Never"}}},
            {"expect": {"title": {"value": "Unreached"}}},
        ])
    error = caught.value
    assert error.message.startswith("steps[2] 'expect #status' (expect '#status'): expectation not met")
    assert error.message.endswith("(soft checks failed before it: steps[1])")
    assert len(error.result.steps) == 3


def violations(step: dict[str, Any]) -> dict[str, str]:
    req = json_format.ParseDict({"queue": "q", "browser": {"steps": [step]}}, job_service_pb2.SubmitJobRequest())
    return {v.field: v.description for v in validate_submit(req, LIMITS)}


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"expect": {"target": S, "text": {"value": "a", "values": ["b"]}}}, "browser.steps[0].expect.text.values"),
        ({"expect": {"target": S, "text": {"values": ["(x"], "regex": True}}},
         "browser.steps[0].expect.text.values[0]"),
        ({"expect": {"target": S, "class": {"value": "a.*", "regex": True, "contains": True}}},
         "browser.steps[0].expect.class_name.regex"),
        ({"expect": {"target": S, "css": {"name": "color"}}}, "browser.steps[0].expect.css.value"),
        ({"expect": {"target": S, "attribute": {"name": ""}}}, "browser.steps[0].expect.attribute.name"),
        ({"expect": {"url": {"value": "[", "regex": True}}}, "browser.steps[0].expect.url.value"),
        ({"expect": {"text": {"value": "x"}}}, "browser.steps[0].expect.target.selector"),
        ({"expect": {"target": S}}, "browser.steps[0].expect"),
        ({"soft": True, "click": {"target": S}}, "browser.steps[0].soft"),
    ],
)
def test_assertions_are_validated_at_submit(step: dict[str, Any], field: str) -> None:
    assert field in violations(step), violations(step)
