"""The `expect` step: Playwright's web-first assertions (playwright.async_api.expect),
each auto-waiting up to the step's timeout and negatable (`"not": true`). When one
fails, the error says what was expected and what the page had instead."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, expect

from conveyor.v1 import task_pb2
from executor.browser.locators import pattern as text_pattern
from executor.browser.step_context import StepContext
from executor.browser.step_errors import expectation_failed, invalid_step, strict_mode_violation
from executor.browser.timing import ACTUAL_VALUE_READ_SECONDS

# Reading the actual value after a failed expectation may take this long (each
# read's own timeout, and all the reads together: an expectation known to have failed
# is reported as such, not as the step's timeout, however slow the page is to read).
# It is most of the step's backstop grace: a loaded machine took over 1 s to read a
# list's texts.
ACTUAL_VALUE_TIMEOUT_MS = ACTUAL_VALUE_READ_SECONDS * 1000
MAX_SHOWN = 200
PAGE_CONDITIONS = ("title_contains", "url_contains", "url", "title")
#: Conditions a legacy selector target need not match for (so it is not waited for).
_MAY_BE_ABSENT = ("hidden", "count", "attached")

Expected = str | re.Pattern[str]


def _shown(value: object) -> str:
    text = repr(value.pattern if isinstance(value, re.Pattern) else value)
    if isinstance(value, re.Pattern):
        text = f"/{value.pattern}/" + ("i" if value.flags & re.IGNORECASE else "")
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _pattern(p: task_pb2.Pattern) -> Expected:
    """A Pattern as Playwright takes it; ignoreCase on a plain string is a whole-text
    case-insensitive regular expression."""
    if p.regex:
        return text_pattern(p.value, True, p.ignore_case)
    if p.ignore_case:
        return re.compile(f"^{re.escape(p.value)}$", re.IGNORECASE)
    return p.value


async def _read(read: Callable[[], Awaitable[object]]) -> str:
    try:
        async with asyncio.timeout(ACTUAL_VALUE_TIMEOUT_MS / 1000):
            return _shown(await read())
    except TimeoutError:
        return f"<not read within {ACTUAL_VALUE_TIMEOUT_MS / 1000:g}s>"
    except PlaywrightError as exc:
        return f"<unreadable: {str(exc).splitlines()[0][:100]}>"


def _reader(
    condition: str, action: task_pb2.ExpectAction, one: Locator, every: Locator
) -> Callable[[], Awaitable[object]]:
    """How to read what the page has, for the error of a failed assertion."""
    t = ACTUAL_VALUE_TIMEOUT_MS

    async def element(read: Callable[[Locator], Awaitable[object]]) -> object:
        count = await every.count()
        if count == 0:
            return "<no element>"
        return await read(one if count == 1 else every.first)

    if condition == "count":
        return every.count
    if condition in ("visible", "hidden"):
        return lambda: element(lambda e: _state(e.is_visible(timeout=t), "visible", "hidden"))
    if condition in ("text_contains", "text_equals"):
        return lambda: element(lambda e: e.inner_text(timeout=t))
    if condition == "text":
        if action.text.values:
            if action.text.use_inner_text:
                return every.all_inner_texts
            return every.all_text_contents
        return lambda: element(lambda e: e.inner_text(timeout=t) if action.text.use_inner_text
                               else e.text_content(timeout=t))
    if condition in ("value", "input_value"):
        return lambda: element(lambda e: e.input_value(timeout=t))
    if condition == "input_values":
        return lambda: element(lambda e: e.evaluate(
            "(s) => Array.from(s.selectedOptions || []).map((o) => o.value)"))
    if condition == "attribute":
        return lambda: element(lambda e: e.get_attribute(action.attribute.name, timeout=t))
    if condition == "class_name":
        if action.class_name.values:
            return lambda: every.evaluate_all("(es) => es.map((e) => e.getAttribute('class'))")
        return lambda: element(lambda e: e.get_attribute("class", timeout=t))
    if condition == "css":
        return lambda: element(lambda e: e.evaluate(
            "(e, name) => getComputedStyle(e).getPropertyValue(name)", action.css.name))
    if condition == "checked":
        return lambda: element(lambda e: _state(e.is_checked(timeout=t), "checked", "unchecked"))
    if condition in ("enabled", "disabled"):
        return lambda: element(lambda e: _state(e.is_enabled(timeout=t), "enabled", "disabled"))
    if condition == "editable":
        return lambda: element(lambda e: _state(e.is_editable(timeout=t), "editable", "not editable"))
    if condition == "focused":
        return lambda: element(lambda e: _state(
            e.evaluate("(e) => e === document.activeElement"), "focused", "not focused"))
    if condition == "attached":
        return lambda: _count_state(every)
    if condition == "in_viewport":
        return lambda: element(lambda e: _state(e.evaluate(_IN_VIEWPORT), "in the viewport", "outside it"))
    if condition == "empty":
        return lambda: element(lambda e: e.evaluate(
            "(e) => ('value' in e && e.tagName !== 'BUTTON') ? e.value : e.textContent"))
    return _nothing


_IN_VIEWPORT = """(e) => { const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
    && r.top < innerHeight && r.left < innerWidth; }"""


async def _nothing() -> object:
    return "<unknown>"


async def _state(value: Awaitable[object], yes: str, no: str) -> str:
    return yes if await value else no


async def _count_state(every: Locator) -> str:
    count = await every.count()
    return "detached" if count == 0 else f"attached ({count} element{'s' if count > 1 else ''})"


Plan = tuple[str, tuple[Any, ...], dict[str, Any], bool, bool, str]


def _plan(condition: str, action: task_pb2.ExpectAction, where: str) -> Plan:
    """(assertion method, args, options, on every match, negated, what is expected)."""
    negate = action.negate
    value = getattr(action, condition)
    if condition in ("visible", "hidden"):
        visible = value == (condition == "visible")
        method = "to_be_visible" if visible else "to_be_hidden"
        return method, (), {}, False, negate, f"{where} {'visible' if visible else 'hidden'}"
    if condition == "text_contains":
        return "to_contain_text", (value,), {}, False, negate, f"text of {where} containing {_shown(value)}"
    if condition == "text_equals":
        return "to_have_text", (value,), {}, False, negate, f"text of {where} equal to {_shown(value)}"
    if condition == "value":
        return "to_have_value", (value,), {}, False, negate, f"value of {where} equal to {_shown(value)}"
    if condition == "count":
        return "to_have_count", (value,), {}, True, negate, f"{value} element(s) matching {where}"
    if condition == "text":
        t: task_pb2.TextExpectation = value
        options: dict[str, Any] = {}
        if t.ignore_case:
            options["ignore_case"] = True
        if t.use_inner_text:
            options["use_inner_text"] = True
        method = "to_contain_text" if t.contains else "to_have_text"
        verb = "containing" if t.contains else ("matching" if t.regex else "equal to")
        if t.values:
            expected: Any = [text_pattern(v, t.regex) for v in t.values]
            wanted = f"texts of {where} {verb} {_shown(list(t.values))}"
            return method, (expected,), options, True, negate, wanted
        single = text_pattern(t.value, t.regex)
        return method, (single,), options, False, negate, f"text of {where} {verb} {_shown(single)}"
    if condition == "input_value":
        p = _pattern(value)
        return "to_have_value", (p,), {}, False, negate, f"value of {where} matching {_shown(p)}"
    if condition == "input_values":
        vs = [text_pattern(v, value.regex) for v in value.values]
        return "to_have_values", (vs,), {}, False, negate, f"selected values of {where} {_shown(list(value.values))}"
    if condition == "attribute":
        a: task_pb2.AttributeExpectation = value
        if a.HasField("value"):
            p = _pattern(a.value)
            return ("to_have_attribute", (a.name, p), {}, False, negate,
                    f"attribute {a.name!r} of {where} matching {_shown(p)}")
        return "to_have_attribute", (a.name,), {}, False, negate, f"{where} with attribute {a.name!r}"
    if condition == "class_name":
        c: task_pb2.ClassExpectation = value
        if c.contains:
            expected = list(c.values) if c.values else c.value
            wanted = f"class of {where} containing {_shown(expected)}"
            return "to_contain_class", (expected,), {}, bool(c.values), negate, wanted
        if c.values:
            expected = [text_pattern(v, c.regex) for v in c.values]
            return "to_have_class", (expected,), {}, True, negate, f"classes of {where} {_shown(list(c.values))}"
        single = text_pattern(c.value, c.regex)
        return "to_have_class", (single,), {}, False, negate, f"class of {where} {_shown(single)}"
    if condition == "css":
        p = _pattern(value.value)
        return "to_have_css", (value.name, p), {}, False, negate, f"CSS {value.name} of {where} {_shown(p)}"
    if condition == "checked":
        state = "checked" if value else "unchecked"
        return "to_be_checked", (), {"checked": value}, False, negate, f"{where} {state}"
    if condition in ("enabled", "disabled"):
        enabled = value == (condition == "enabled")
        state = "enabled" if enabled else "disabled"
        return "to_be_enabled", (), {"enabled": enabled}, False, negate, f"{where} {state}"
    if condition == "editable":
        state = "editable" if value else "not editable"
        return "to_be_editable", (), {"editable": value}, False, negate, f"{where} {state}"
    if condition == "attached":
        state = "attached" if value else "detached"
        return "to_be_attached", (), {"attached": value}, False, negate, f"{where} {state}"
    # focused / in_viewport / empty: false is the negation.
    phrase = {"focused": "focused", "in_viewport": "in the viewport", "empty": "empty"}[condition]
    method = {"focused": "to_be_focused", "in_viewport": "to_be_in_viewport", "empty": "to_be_empty"}[condition]
    flipped = negate != (not value)
    return method, (), {}, False, flipped, f"{where} {'' if value else 'not '}{phrase}"


async def expect_step(ctx: StepContext, action: task_pb2.ExpectAction) -> None:
    condition = action.WhichOneof("condition")
    if condition is None:
        raise invalid_step("expect needs a condition")
    if condition in PAGE_CONDITIONS:
        await _expect_page(ctx, ctx.page, condition, action)
        return
    if not action.HasField("target"):
        raise invalid_step(f"expect {condition} needs a target")
    may_be_absent = (
        action.target.HasField("locator")
        or action.negate
        or condition in _MAY_BE_ABSENT
        or (condition == "visible" and not action.visible)
        or (condition == "attached" and not action.attached)
    )
    found = await (ctx.target_now(action.target) if may_be_absent else ctx.target(action.target))
    where = found.selector if found.strict else repr(found.selector)
    method, args, options, on_every, negated, expected = _plan(condition, action, where)
    if action.negate:
        expected = "not " + expected
    state = next((k for k in ("checked", "enabled", "editable", "attached") if k in options), None)
    if state is not None and negated:
        # Playwright's not_to_be_checked() and the like take no state: ask for the other one.
        options[state], negated = not options[state], False
    subject = found.locator if on_every else found.first
    assertions = expect(subject)
    check = getattr(assertions, ("not_" if negated else "") + method)
    try:
        await check(*args, timeout=ctx.deadline.remaining_ms(), **options)
    except AssertionError as exc:
        if found.strict and "strict mode violation" in str(exc):
            raise strict_mode_violation(where, await found.locator.count()) from None
        actual = await _read(_reader(condition, action, found.first, found.locator))
        raise expectation_failed(expected, actual) from None


async def _expect_page(ctx: StepContext, page: Page, condition: str, action: task_pb2.ExpectAction) -> None:
    assertions = expect(page)
    negate = action.negate
    prefix = "not " if negate else ""
    options: dict[str, Any] = {}
    if condition == "title_contains":
        expected: Expected = re.compile(re.escape(action.title_contains))
        what = f"title containing {_shown(action.title_contains)}"
    elif condition == "url_contains":
        expected = re.compile(re.escape(action.url_contains))
        what = f"URL containing {_shown(action.url_contains)}"
    elif condition == "url":
        expected = _pattern(action.url)
        if not action.url.regex and action.url.ignore_case:
            expected, options = action.url.value, {"ignore_case": True}
        what = f"URL {'matching' if action.url.regex else 'equal to'} {_shown(expected)}"
    else:
        expected = _pattern(action.title)
        what = f"title {'matching' if action.title.regex else 'equal to'} {_shown(expected)}"
    is_title = condition in ("title", "title_contains")
    method = ("not_" if negate else "") + ("to_have_title" if is_title else "to_have_url")
    try:
        await getattr(assertions, method)(expected, timeout=ctx.deadline.remaining_ms(), **options)
    except AssertionError:
        actual = await _read(page.title) if is_title else _shown(page.url)
        raise expectation_failed(prefix + what, actual) from None
