"""Structured locators (`target.locator`) on real Chromium: every way to pick
elements, nth/first/last, filters, chains and frames; strictness and not-found
errors in Playwright's notation; validation at submit naming the field path."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from conveyor.v1 import job_pb2, job_service_pb2
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from gateway.validation import Limits, validate_submit
from tests.browser.helpers import browser_task, new_job_id, run_steps, values_of

LIMITS = Limits(max_steps=200, max_file_bytes=5 << 20, max_request_bytes=8 << 20, max_job_timeout_ms=3_600_000)


def loc(**locator: Any) -> dict[str, Any]:
    return {"locator": locator}


async def test_every_locator_kind_in_one_job(runner: BrowserTaskRunner, pages_url: str) -> None:
    steps: list[dict[str, Any]] = [
        {"navigate": {"url": f"{pages_url}/locators.html"}},
        # role + name (exact: "Save draft" does not count), and the click lands.
        {"click": {"target": loc(role="button", name="Save", exact=True)}},
        {"extract": {"target": {"selector": "#log"}, "key": "after_save"}},
        # role with a regex name, and ARIA states / heading level
        {"expect": {"target": loc(role="button", name="^save", regex=True, ignoreCase=True), "count": 2}},
        {"expect": {"target": loc(role="button", name="Delete", disabled=True), "count": 1}},
        {"expect": {"target": loc(role="checkbox", checked=True), "count": 1}},
        {"extract": {"target": loc(role="heading", level=2), "key": "h2"}},
        # text: substring and case-insensitive by default; exact; regex
        {"expect": {"target": loc(text="Hello World", exact=True), "visible": True}},
        {"expect": {"target": loc(text="hello world"), "count": 2}},
        {"expect": {"target": loc(text="^hello world,", regex=True), "count": 1}},
        # label, placeholder, alt text, title, test id
        {"fill": {"target": loc(label="Email address"), "text": "ada@example.org"}},
        {"fill": {"target": loc(placeholder="Search products"), "text": "tea"}},
        {"extract": {"target": {"selector": "#email"}, "key": "email", "attribute": "placeholder"}},
        {"expect": {"target": {"selector": "#email"}, "value": "ada@example.org"}},
        {"expect": {"target": {"selector": "#search"}, "value": "tea"}},
        {"extract": {"target": loc(altText="Company logo"), "key": "alt", "attribute": "id"}},
        {"extract": {"target": loc(title="Close dialog"), "key": "title"}},
        {"extract": {"target": loc(testId="banner"), "key": "banner"}},
        # css and xpath
        {"expect": {"target": loc(css="#cart > li"), "count": 3}},
        {"expect": {"target": loc(xpath="//ul[@id='cart']/li"), "count": 3}},
        # nth / first / last
        {"extract": {"target": loc(testId="cart-item", nth=1), "key": "nth1"}},
        {"extract": {"target": loc(testId="cart-item", nth=-1), "key": "nth_last"}},
        {"extract": {"target": loc(testId="cart-item", first=True), "key": "first"}},
        {"extract": {"target": loc(testId="cart-item", last=True), "key": "last"}},
        {"extract": {"target": loc(css="#cart li span"), "key": "all", "all": True}},
        # filters: hasText, hasNotText, has, hasNot, visible
        {"extract": {"target": loc(css="li", filters=[{"hasText": "Eggs"}]), "key": "has_text"}},
        {"expect": {"target": loc(css="#cart li", filters=[{"hasNotText": "Milk"}]), "count": 2}},
        {"extract": {"target": loc(css="li", filters=[{"has": {"css": "em"}}]), "key": "has"}},
        {"expect": {"target": loc(css="#cart li", filters=[{"hasNot": {"css": "em"}}]), "count": 2}},
        {"expect": {"target": loc(css="p", filters=[{"hasText": "Hidden"}, {"visible": False}]), "count": 1}},
        {"expect": {"target": loc(css="li", filters=[{"hasText": "^e", "regex": True, "ignoreCase": True}]),
                    "count": 1}},
        # a chain: the Remove button inside the item that has "Bread"
        {"name": "chain", "click": {"target": loc(role="button", name="Remove",
                                                  within={"testId": "cart-item", "filters": [{"hasText": "Bread"}]})}},
        {"extract": {"target": {"selector": "#log"}, "key": "removed"}},
        # frames: a button in an iframe (found by its title), and one in a nested iframe
        {"name": "frame", "click": {"target": loc(role="button", name="Pay", frames=[{"title": "Checkout"}])}},
        {"extract": {"target": {"selector": "#log"}, "key": "paid"}},
        {"expect": {"target": loc(role="button", name="Deep", frames=[{"css": "#checkout"}, {"css": "#inner"}]),
                    "visible": True}},
        {"expect": {"target": loc(text="In frame", frames=[{"css": "iframe#checkout"}]),
                    "text": {"value": "In frame"}}},
    ]
    result = await run_steps(runner, steps)
    assert all(s.status == job_pb2.STEP_STATUS_OK for s in result.steps)
    assert values_of(result) == {
        "after_save": "saved",
        "h2": "Cart",
        "email": "you@example.org",
        "alt": "logo",
        "title": "x",
        "banner": "Welcome back",
        "nth1": "Eggs Remove",
        "nth_last": "Bread Remove sale",
        "first": "Milk Remove",
        "last": "Bread Remove sale",
        "all": ["Milk", "Eggs", "Bread"],
        "has_text": "Eggs Remove",
        "has": "Bread Remove sale",
        "removed": "removed Bread",
        "paid": "paid",
    }
    # The step result names the locator in Playwright's notation.
    assert result.steps[1].matched_selector == "getByRole('button', { name: 'Save', exact: true })"
    by_name = {s.name: s for s in result.steps}
    assert by_name["chain"].matched_selector == (
        "getByTestId('cart-item').filter({ hasText: 'Bread' }).getByRole('button', { name: 'Remove' })"
    )
    assert by_name["frame"].matched_selector == (
        "getByTitle('Checkout').contentFrame().getByRole('button', { name: 'Pay' })"
    )


async def test_custom_test_id_attribute(runner: BrowserTaskRunner, pages_url: str) -> None:
    task = browser_task([
        {"navigate": {"url": f"{pages_url}/locators.html"}},
        {"extract": {"target": loc(testId="promo"), "key": "promo"}},
    ])
    task.context.test_id_attribute = "data-test"
    result = await runner.run(new_job_id(), task, _quiet)
    assert values_of(result) == {"promo": "Promo of the day"}


async def _quiet(progress: int, message: str, step_index: int, step_name: str) -> None:
    return None


async def test_strictness_and_not_found_name_the_locator(runner: BrowserTaskRunner, pages_url: str) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/locators.html"}},
            {"name": "save it", "click": {"target": loc(role="button", name="Save")}},
        ])
    error = caught.value
    assert (error.reason, error.retryable) == ("STRICT_MODE_VIOLATION", False)
    assert error.message.startswith(
        "steps[1] 'save it' (click getByRole('button', { name: 'Save' })): strict mode violation: "
        "getByRole('button', { name: 'Save' }) matched 2 elements"
    ), error.message
    assert error.metadata["count"] == "2"

    # An assertion on one element is strict too (Playwright's own check).
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/locators.html"}},
            {"timeout": "1s", "expect": {"target": loc(testId="cart-item"), "text": {"value": "Milk"}}},
        ])
    assert caught.value.reason == "STRICT_MODE_VIOLATION"
    assert "getByTestId('cart-item') matched 3 elements" in caught.value.message, caught.value.message

    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/locators.html"}},
            {"timeout": "0.5s", "fill": {"target": loc(label="Phone", exact=True), "text": "1"}},
        ])
    error = caught.value
    assert (error.reason, error.retryable) == ("ELEMENT_NOT_FOUND", True)
    assert "no element matched getByLabel('Phone', { exact: true }) within 0.5s" in error.message
    assert error.message.startswith("steps[1] ")
    assert "(fill getByLabel('Phone', { exact: true })): no element matched" in error.message


async def test_bad_css_inside_a_locator_fails_before_any_step(runner: BrowserTaskRunner, pages_url: str) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/locators.html"}},
            {"click": {"target": loc(role="button", within={"css": "li[["})}},
        ])
    assert (caught.value.reason, caught.value.retryable) == ("INVALID_SELECTOR", False)
    assert len(caught.value.result.steps) == 0


def violations(steps: list[dict[str, Any]], context: dict[str, Any] | None = None) -> dict[str, str]:
    browser: dict[str, Any] = {"steps": steps}
    if context:
        browser["context"] = context
    req = json_format.ParseDict({"queue": "q", "browser": browser}, job_service_pb2.SubmitJobRequest())
    return {v.field: v.description for v in validate_submit(req, LIMITS)}


@pytest.mark.parametrize(
    ("locator", "field", "words"),
    [
        ({"role": "buton", "name": "Save"}, "browser.steps[0].click.target.locator.role", "not an ARIA role"),
        ({}, "browser.steps[0].click.target.locator", "needs one of role"),
        ({"text": "(unclosed", "regex": True}, "browser.steps[0].click.target.locator.text", "regular expression"),
        ({"css": "li", "name": "x"}, "browser.steps[0].click.target.locator.name", "role locators only"),
        ({"css": "li", "nth": 1, "last": True}, "browser.steps[0].click.target.locator.nth", "one of nth"),
        ({"css": "li", "filters": [{}]}, "browser.steps[0].click.target.locator.filters[0]", "hasText"),
        ({"css": "li", "filters": [{"has": {"role": "nope"}}]},
         "browser.steps[0].click.target.locator.filters[0].has.role", "ARIA role"),
        ({"role": "button", "frames": [{"css": ""}]}, "browser.steps[0].click.target.locator.frames[0].css", "empty"),
        ({"role": "heading", "level": 9}, "browser.steps[0].click.target.locator.level", "between 1 and 6"),
        ({"text": "a", "ignoreCase": True}, "browser.steps[0].click.target.locator.ignore_case", "regex"),
    ],
)
def test_locators_are_validated_at_submit(locator: dict[str, Any], field: str, words: str) -> None:
    found = violations([{"click": {"target": {"locator": locator}}}])
    assert field in found, found
    assert words in found[field]


def test_nesting_and_selector_with_locator_are_refused() -> None:
    deep: dict[str, Any] = {"css": "a"}
    for _ in range(10):
        deep = {"css": "div", "within": deep}
    found = violations([{"click": {"target": {"locator": deep}}}])
    assert any("nest at most" in d for d in found.values()), found
    found = violations([{"click": {"target": {"selector": "#a", "locator": {"css": "#a"}}}}])
    assert "browser.steps[0].click.target.locator" in found
    regex_custom = violations([{"click": {"target": loc(testId="a.*", regex=True)}}], {"testIdAttribute": "data-test"})
    assert "browser.steps[0].click.target.locator.regex" in regex_custom
    assert violations([{"click": {"target": loc(role="button", name="Save", exact=True)}}]) == {}
