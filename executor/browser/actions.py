"""Steps that act on the page: navigate, click, fill, type, clear, press, hover,
select, check, uncheck, scroll, upload."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, cast

from playwright.async_api import Error as PlaywrightError

from conveyor.browser_steps import BUTTONS, WAIT_UNTIL
from conveyor.v1 import task_pb2
from executor.browser.request_guard import host_not_resolved, policy_violation
from executor.browser.step_context import StepContext
from executor.browser.step_errors import invalid_step
from executor.browser.targets import act
from executor.browser.timing import seconds_of

WaitUntil = Literal["commit", "domcontentloaded", "load", "networkidle"]
MouseButton = Literal["left", "middle", "right"]
# How long a failed navigation waits to hear that the policy refused it.
POLICY_VERDICT_WAIT_SECONDS = 1.0
_REFUSED_MARKS = ("ERR_BLOCKED_BY_CLIENT", "ERR_SOCKS_CONNECTION_FAILED", "ERR_PROXY_CONNECTION")


async def navigate(ctx: StepContext, action: task_pb2.NavigateAction) -> None:
    if not action.url:
        raise invalid_step("navigate needs a url")
    wait_until = action.wait_until or "load"
    if wait_until not in WAIT_UNTIL:
        raise invalid_step(f"waitUntil must be one of {', '.join(WAIT_UNTIL)}, not {wait_until!r}")
    decision = await ctx.guard.policy.check_url(action.url)
    if decision.unresolved:
        raise host_not_resolved(action.url, decision.host, decision.reason)
    if not decision.allowed:
        raise policy_violation(action.url, decision.reason)
    try:
        await ctx.page.goto(
            action.url,
            wait_until=cast(WaitUntil, wait_until),
            timeout=ctx.deadline.remaining_ms(),
        )
    except PlaywrightError as exc:
        if any(mark in str(exc) for mark in _REFUSED_MARKS):
            # The policy refused the navigation or a redirect hop; the guard hears of
            # it through an event that may still be on its way.
            # (Or that a hop's host did not resolve: the proxy says "host unreachable".)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLICY_VERDICT_WAIT_SECONDS):
                    await ctx.guard.navigation_verdict()
            if ctx.guard.violation is not None:
                raise ctx.guard.violation from None
            if ctx.guard.unresolved_navigation is not None:
                raise ctx.guard.unresolved_navigation from None
        raise


async def click(ctx: StepContext, action: task_pb2.ClickAction) -> None:
    button = action.button or "left"
    if button not in BUTTONS:
        raise invalid_step(f"button must be one of {', '.join(BUTTONS)}, not {button!r}")
    if action.click_count < 0 or action.click_count > 3:
        raise invalid_step("clickCount must be 1, 2 or 3")
    await act(ctx, action.target, lambda e: e.click(
        button=cast(MouseButton, button),
        click_count=action.click_count or 1,
        timeout=ctx.deadline.remaining_ms(),
    ))


async def fill(ctx: StepContext, action: task_pb2.FillAction) -> None:
    await act(ctx, action.target, lambda e: e.fill(action.text, timeout=ctx.deadline.remaining_ms()))


async def type_text(ctx: StepContext, action: task_pb2.TypeAction) -> None:
    delay_ms = seconds_of(action.delay) * 1000 if action.HasField("delay") else 0.0
    if delay_ms < 0:
        raise invalid_step("delay must not be negative")
    await act(ctx, action.target, lambda e: e.press_sequentially(
        action.text, delay=delay_ms, timeout=ctx.deadline.remaining_ms()
    ))


async def clear(ctx: StepContext, action: task_pb2.ClearAction) -> None:
    await act(ctx, action.target, lambda e: e.clear(timeout=ctx.deadline.remaining_ms()))


async def press(ctx: StepContext, action: task_pb2.PressAction) -> None:
    if not action.key:
        raise invalid_step("press needs a key")
    await act(ctx, action.target, lambda e: e.press(action.key, timeout=ctx.deadline.remaining_ms()))


async def hover(ctx: StepContext, action: task_pb2.HoverAction) -> None:
    await act(ctx, action.target, lambda e: e.hover(timeout=ctx.deadline.remaining_ms()))


async def select(ctx: StepContext, action: task_pb2.SelectAction) -> None:
    if not action.values and not action.labels:
        raise invalid_step("select needs values or labels")
    if action.values:
        await act(ctx, action.target, lambda e: e.select_option(
            value=list(action.values), timeout=ctx.deadline.remaining_ms()))
    else:
        await act(ctx, action.target, lambda e: e.select_option(
            label=list(action.labels), timeout=ctx.deadline.remaining_ms()))


async def check(ctx: StepContext, action: task_pb2.CheckAction) -> None:
    await act(ctx, action.target, lambda e: e.check(timeout=ctx.deadline.remaining_ms()))


async def uncheck(ctx: StepContext, action: task_pb2.UncheckAction) -> None:
    await act(ctx, action.target, lambda e: e.uncheck(timeout=ctx.deadline.remaining_ms()))


async def scroll(ctx: StepContext, action: task_pb2.ScrollAction) -> None:
    if action.HasField("target"):
        await act(ctx, action.target, lambda e: e.scroll_into_view_if_needed(timeout=ctx.deadline.remaining_ms()))
        return
    if not action.dx and not action.dy:
        raise invalid_step("scroll needs a target, or dx/dy")
    await ctx.page.evaluate(
        "([dx, dy]) => window.scrollBy(dx, dy)", [int(action.dx), int(action.dy)]
    )


async def upload(ctx: StepContext, action: task_pb2.UploadAction) -> None:
    paths = await ctx.outputs.uploads.paths(list(action.files))
    await act(ctx, action.target, lambda e: e.set_input_files(paths, timeout=ctx.deadline.remaining_ms()))
