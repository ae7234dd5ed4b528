"""Steps that wait: `wait` (an element state, a duration, a URL, a load state) and
`expect` (an assertion that auto-waits up to the step's timeout and, when it fails,
says what it found instead)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Literal, cast

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.v1 import task_pb2
from executor.browser.step_context import StepContext
from executor.browser.step_errors import expectation_failed, invalid_step, step_timeout
from executor.browser.timing import seconds_of

ElementState = Literal["attached", "detached", "hidden", "visible"]
LoadState = Literal["domcontentloaded", "load", "networkidle"]
ELEMENT_STATES = ("visible", "hidden", "attached", "detached")
LOAD_STATES = ("load", "domcontentloaded", "networkidle")
# Reading the actual value after a failed expectation may take this long.
ACTUAL_VALUE_TIMEOUT_MS = 1000.0
MAX_SHOWN = 200


def wait_duration_seconds(action: task_pb2.WaitAction) -> float | None:
    return seconds_of(action.duration) if action.HasField("duration") else None


async def wait(ctx: StepContext, action: task_pb2.WaitAction) -> None:
    if action.HasField("target"):
        state = action.state or "visible"
        if state not in ELEMENT_STATES:
            raise invalid_step(f"state must be one of {', '.join(ELEMENT_STATES)}, not {state!r}")
        if state in {"hidden", "detached"}:
            found = await ctx.target_now(action.target)
        else:
            found = await ctx.target(action.target)
        try:
            await found.first.wait_for(
                state=cast(ElementState, state), timeout=ctx.deadline.remaining_ms()
            )
        except PlaywrightTimeoutError:
            raise step_timeout(
                ctx.deadline.total, f"{found.selector!r} did not become {state}"
            ) from None
        return
    duration = wait_duration_seconds(action)
    if duration is not None:
        if duration < 0:
            raise invalid_step("duration must not be negative")
        await asyncio.sleep(duration)
        return
    if action.url_contains:
        needle = action.url_contains
        try:
            await ctx.page.wait_for_url(
                lambda url: needle in url, timeout=ctx.deadline.remaining_ms()
            )
        except PlaywrightTimeoutError:
            raise step_timeout(
                ctx.deadline.total, f"the URL did not come to contain {needle!r} (it is {ctx.page.url})"
            ) from None
        return
    if action.load_state:
        if action.load_state not in LOAD_STATES:
            raise invalid_step(
                f"loadState must be one of {', '.join(LOAD_STATES)}, not {action.load_state!r}"
            )
        await ctx.page.wait_for_load_state(
            cast(LoadState, action.load_state), timeout=ctx.deadline.remaining_ms()
        )
        return
    raise invalid_step("wait needs a target, a duration, urlContains or loadState")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


async def _actual(read: Callable[[], Awaitable[object]]) -> str:
    try:
        return _shown(await read())
    except PlaywrightError as exc:
        return f"<unreadable: {str(exc).splitlines()[0][:100]}>"


async def _element_text(locator: Locator) -> object:
    if await locator.count() == 0:
        return "<no element>"
    return await locator.first.inner_text(timeout=ACTUAL_VALUE_TIMEOUT_MS)


async def _element_value(locator: Locator) -> object:
    if await locator.count() == 0:
        return "<no element>"
    return await locator.first.input_value(timeout=ACTUAL_VALUE_TIMEOUT_MS)


async def _visibility(locator: Locator) -> object:
    count = await locator.count()
    if count == 0:
        return "<no element>"
    return "visible" if await locator.first.is_visible() else "hidden"


async def expect_step(ctx: StepContext, action: task_pb2.ExpectAction) -> None:
    condition = action.WhichOneof("condition")
    if condition is None:
        raise invalid_step("expect needs a condition")
    page = ctx.page
    if condition in {"title_contains", "url_contains"}:
        await _expect_page(ctx, page, condition, action)
        return
    if not action.HasField("target"):
        raise invalid_step(f"expect {condition} needs a target")
    timeout = ctx.deadline.remaining_ms
    want_hidden = (condition == "hidden" and action.hidden) or (
        condition == "visible" and not action.visible
    )
    if want_hidden or condition == "count":
        found = await ctx.target_now(action.target)
    else:
        found = await ctx.target(action.target)
    first, every = found.first, found.locator
    where = f"{found.selector!r}"
    try:
        if want_hidden:
            await expect(first).to_be_hidden(timeout=timeout())
        elif condition in {"visible", "hidden"}:
            await expect(first).to_be_visible(timeout=timeout())
        elif condition == "text_contains":
            await expect(first).to_contain_text(action.text_contains, timeout=timeout())
        elif condition == "text_equals":
            await expect(first).to_have_text(action.text_equals, timeout=timeout())
        elif condition == "value":
            await expect(first).to_have_value(action.value, timeout=timeout())
        elif condition == "count":
            await expect(every).to_have_count(action.count, timeout=timeout())
    except AssertionError:
        if want_hidden:
            raise expectation_failed(f"{where} hidden", await _actual(lambda: _visibility(every))) from None
        if condition in {"visible", "hidden"}:
            raise expectation_failed(f"{where} visible", await _actual(lambda: _visibility(every))) from None
        if condition == "text_contains":
            raise expectation_failed(
                f"text of {where} containing {_shown(action.text_contains)}",
                await _actual(lambda: _element_text(every)),
            ) from None
        if condition == "text_equals":
            raise expectation_failed(
                f"text of {where} equal to {_shown(action.text_equals)}",
                await _actual(lambda: _element_text(every)),
            ) from None
        if condition == "value":
            raise expectation_failed(
                f"value of {where} equal to {_shown(action.value)}",
                await _actual(lambda: _element_value(every)),
            ) from None
        raise expectation_failed(
            f"{action.count} element(s) matching {where}", await _actual(every.count)
        ) from None


async def _expect_page(
    ctx: StepContext, page: Page, condition: str, action: task_pb2.ExpectAction
) -> None:
    if condition == "title_contains":
        needle = action.title_contains
        try:
            await expect(page).to_have_title(
                re.compile(re.escape(needle)), timeout=ctx.deadline.remaining_ms()
            )
        except AssertionError:
            raise expectation_failed(
                f"title containing {_shown(needle)}", await _actual(page.title)
            ) from None
        return
    needle = action.url_contains
    try:
        await expect(page).to_have_url(
            re.compile(re.escape(needle)), timeout=ctx.deadline.remaining_ms()
        )
    except AssertionError:
        raise expectation_failed(f"URL containing {_shown(needle)}", _shown(page.url)) from None
