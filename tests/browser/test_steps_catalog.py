"""The step catalog (conveyor/browser_steps.py) is the one source: it lists every
step, locator, assertion and context option of the proto, under its JSON name; the
executor has a handler for every step; every example is a valid request; and the
README's "Browser steps" section is exactly what the catalog generates."""

from __future__ import annotations

import typing
from typing import Any

from google.protobuf import json_format
from playwright.async_api import Locator, async_playwright

from conveyor import browser_steps
from conveyor.v1 import job_service_pb2, task_pb2
from executor.browser.steps import ACTIONS
from gateway.validation import Limits, validate_submit

LIMITS = Limits(max_steps=200, max_file_bytes=5 << 20, max_request_bytes=8 << 20, max_job_timeout_ms=3_600_000)


def json_names(descriptor: Any, oneof: str | None = None) -> dict[str, str]:
    fields = descriptor.oneofs_by_name[oneof].fields if oneof else descriptor.fields
    return {f.name: f.json_name for f in fields}


def test_every_step_of_the_proto_is_in_the_catalog_and_has_a_handler() -> None:
    actions = json_names(task_pb2.Step.DESCRIPTOR, "action")
    assert [e.field for e in browser_steps.STEPS] == list(actions)
    assert {e.name for e in browser_steps.STEPS} == set(actions.values()) | set()
    assert all(actions[e.field] == e.name for e in browser_steps.STEPS)
    assert set(ACTIONS) == set(browser_steps.STEP_NAMES)


def test_every_assertion_locator_and_context_option_is_in_the_catalog() -> None:
    conditions = json_names(task_pb2.ExpectAction.DESCRIPTOR, "condition")
    conditions["negate"] = "not"
    conditions["soft"] = "soft"  # a Step field, for checks
    assert {e.field: e.name for e in browser_steps.ASSERTIONS} == conditions
    pickers = json_names(task_pb2.Locator.DESCRIPTOR, "by")
    locator_fields = json_names(task_pb2.Locator.DESCRIPTOR)
    for entry in browser_steps.LOCATORS:
        assert locator_fields[entry.field] == entry.name
    assert set(pickers) <= {e.field for e in browser_steps.LOCATORS}
    options = json_names(task_pb2.BrowserContextOptions.DESCRIPTOR)
    assert {e.field: e.name for e in browser_steps.CONTEXT_OPTIONS} == options


def _request(browser: dict[str, Any]) -> job_service_pb2.SubmitJobRequest:
    browser.setdefault("files", [{"name": "report.pdf", "content": ""}])
    return json_format.ParseDict({"queue": "q", "browser": browser}, job_service_pb2.SubmitJobRequest())


def test_every_example_is_a_valid_request() -> None:
    for entry in (*browser_steps.STEPS, *browser_steps.ASSERTIONS):
        req = _request({"steps": [entry.example]})
        assert validate_submit(req, LIMITS) == [], entry
    for entry in browser_steps.LOCATORS:
        req = _request({"steps": [{"click": {"target": entry.example}}]})
        assert validate_submit(req, LIMITS) == [], entry
    for entry in browser_steps.CONTEXT_OPTIONS:
        req = _request({"steps": [{"reload": {}}], **entry.example})
        assert validate_submit(req, LIMITS) == [], entry


def test_the_readme_section_is_generated_from_the_catalog() -> None:
    readme = browser_steps.README.read_text(encoding="utf-8")
    assert browser_steps.readme_section(readme) == browser_steps.markdown(), (
        "README.md's browser steps section drifted: run `python -m conveyor.browser_steps --write-readme`"
    )
    for entry in (*browser_steps.STEPS, *browser_steps.LOCATORS, *browser_steps.ASSERTIONS):
        assert f"| `{entry.name}` |" in readme


def test_aria_roles_are_playwrights() -> None:
    hints = typing.get_type_hints(Locator.get_by_role)
    assert tuple(typing.get_args(hints["role"])) == browser_steps.ARIA_ROLES


async def test_the_device_list_is_playwrights() -> None:
    async with async_playwright() as p:
        theirs = {name: dict(p.devices[name]) for name in p.devices}
    assert browser_steps.devices() == theirs, "run `python -m conveyor.browser_steps --write-devices`"
