"""The `wait` step: an element state, a duration, a URL or a load state (assertions,
the `expect` step, are in assertions.py)."""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.browser_steps import ELEMENT_STATES, LOAD_STATES
from conveyor.v1 import task_pb2
from executor.browser.step_context import StepContext
from executor.browser.step_errors import invalid_step, step_timeout
from executor.browser.targets import for_action, locator_failure
from executor.browser.timing import seconds_of

ElementState = Literal["attached", "detached", "hidden", "visible"]
LoadState = Literal["domcontentloaded", "load", "networkidle"]


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
            # A structured locator as it is: its wait_for waits for it, strictly
            # (no resolving round trips first); a selector resolved first.
            found = await for_action(ctx, action.target)
        try:
            await found.first.wait_for(
                state=cast(ElementState, state), timeout=ctx.deadline.remaining_ms()
            )
        except PlaywrightError as exc:
            failure = None
            if found.strict and state not in {"hidden", "detached"}:
                failure = await locator_failure(exc, found, ctx.deadline)  # not found, several
            if failure is not None:
                ctx.matched_selector = ""
                raise failure from None
            if not isinstance(exc, PlaywrightTimeoutError):
                raise
            raise step_timeout(
                ctx.deadline.total,
                f"{found.selector if found.strict else repr(found.selector)} did not become {state}",
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
