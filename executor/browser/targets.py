"""Targets: a Playwright selector plus fallbacks, resolved to the first that matches,
or a structured locator (locators.py), which is strict as in Playwright: an action
needs exactly one element, and "none" or "several" is the step's error.

Waiting is event-driven: one wait for *any* candidate (`a.or_(b).or_(c)`), so the
fallbacks do not each burn the step's timeout; then a quick count per candidate, in
order, says which one matched.

An action on a structured locator (`act`) costs no round trip before it: Playwright's
actions wait for the element and are strict themselves, and their errors become the
step's (`locator_failure`). Steps that need the matches first (every match, `one=False`)
resolve the locator (`resolve_locator`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.browser_steps import DEFAULT_TEST_ID_ATTRIBUTE
from conveyor.v1 import task_pb2
from executor.browser import locators
from executor.browser.step_errors import (
    StepFailure,
    element_not_found,
    first_line,
    invalid_selector,
    invalid_step,
    is_invalid_selector_error,
    locator_not_found,
    strict_count,
    strict_mode_violation,
)
from executor.browser.timing import Deadline

if TYPE_CHECKING:
    from executor.browser.step_context import StepContext

T = TypeVar("T")
# In the call log of Playwright's timeout error once the locator matched an element.
_RESOLVED_MARK = "locator resolved to"


@dataclass(frozen=True)
class ResolvedTarget:
    selector: str  # the selector that matched, or the locator in Playwright's notation
    locator: Locator  # every element the selector (or locator) matches
    strict: bool = False  # a structured locator: actions need exactly one element

    @property
    def first(self) -> Locator:
        """The element to act on: a selector's first match; a locator itself (which
        Playwright's actions and assertions treat strictly)."""
        return self.locator if self.strict else self.locator.first


def is_structured(target: task_pb2.Target) -> bool:
    return target.HasField("locator")


def describe(target: task_pb2.Target, test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE) -> str:
    if is_structured(target):
        return locators.describe(target.locator, test_id_attribute)
    return target.selector


async def resolve_locator(
    page: Page, target: task_pb2.Target, deadline: Deadline, test_id_attribute: str, *, one: bool = True
) -> ResolvedTarget:
    """Wait (up to the deadline) until the locator matches: exactly one element
    (`one`), or at least one (a step that reads every match)."""
    found = locators.build(page, target.locator, test_id_attribute)
    described = locators.describe(target.locator, test_id_attribute)
    while True:
        try:
            await found.first.wait_for(state="attached", timeout=deadline.remaining_ms())
        except PlaywrightTimeoutError:
            raise locator_not_found(described, deadline.total) from None
        except PlaywrightError as exc:
            if is_invalid_selector_error(exc):
                raise invalid_selector(described, first_line(exc)) from None
            raise
        count = await found.count()
        if count == 1 or (count > 1 and not one):
            return ResolvedTarget(described, found, strict=True)
        if count > 1:
            raise strict_mode_violation(described, count)
        if deadline.expired():
            raise locator_not_found(described, deadline.total)


async def locator_failure(exc: PlaywrightError, found: ResolvedTarget, deadline: Deadline) -> StepFailure | None:
    """The step's error for what a Playwright action (or a strict read) on a structured
    locator raised, as `resolve_locator` would have said it; None: the action's own
    error stands (a timeout on an element that matched but never became actionable,
    which the runner reports as the step's timeout). Only a timeout costs a round
    trip: one count, to tell "nothing matched" from "matched, not actionable"."""
    described = found.selector
    if isinstance(exc, PlaywrightTimeoutError):
        try:
            count = await found.locator.count()
        except PlaywrightError:
            return None
        if count == 0:
            # Gone by now, but matched during the action (its call log says so): the
            # action's timeout stands, as when the element was found before acting.
            if _RESOLVED_MARK in str(exc):
                return None
            return locator_not_found(described, deadline.total)
        if count > 1:
            return strict_mode_violation(described, count)
        return None
    if is_invalid_selector_error(exc):
        return invalid_selector(described, first_line(exc))
    several = strict_count(exc)
    if several is not None:
        return strict_mode_violation(described, several)
    return None


async def act(ctx: StepContext, target: task_pb2.Target, action: Callable[[Locator], Awaitable[T]]) -> T:
    """Run a Playwright action (click, fill, check, ...) on the target's element.

    A selector with fallbacks is resolved first (the first that matches wins). A
    structured locator goes straight to the action, which waits for its element and
    enforces strictness itself: no round trip before it; its errors become the step's
    (not found, strict mode violation, invalid selector) with the same messages."""
    return await act_on(ctx, await for_action(ctx, target), action)


async def for_action(ctx: StepContext, target: task_pb2.Target) -> ResolvedTarget:
    """The target of an action that Playwright makes strict and auto-waiting: a
    selector resolved (waited for); a structured locator as it is (no round trip),
    for `act_on`, whose action waits for it."""
    return await (ctx.target_now(target) if is_structured(target) else ctx.target(target))


async def act_on(ctx: StepContext, found: ResolvedTarget, action: Callable[[Locator], Awaitable[T]]) -> T:
    """Run the action on `for_action`'s target; a structured locator's failures as
    the step's errors (`locator_failure`)."""
    if not found.strict:
        return await action(found.first)
    try:
        return await action(found.locator)
    except PlaywrightError as exc:
        failure = await locator_failure(exc, found, ctx.deadline)
        if failure is None:
            raise
        ctx.matched_selector = ""  # it matched nothing, or not one element
        raise failure from None


def candidates(target: task_pb2.Target) -> list[str]:
    """The selectors of a target, main first, blanks dropped."""
    found = [s for s in (target.selector, *target.fallbacks) if s.strip()]
    if not found:
        raise invalid_step("the step needs a target with a selector")
    return found


async def check_selector(page: Page, selector: str) -> None:
    """Fail with INVALID_SELECTOR if Playwright cannot parse the selector."""
    try:
        await page.locator(selector).count()
    except PlaywrightError as exc:
        if is_invalid_selector_error(exc):
            raise invalid_selector(selector, first_line(exc)) from None
        raise


async def _first_matching(page: Page, selectors: list[str]) -> str | None:
    for selector in selectors:
        try:
            if await page.locator(selector).count() > 0:
                return selector
        except PlaywrightError as exc:
            if is_invalid_selector_error(exc):
                raise invalid_selector(selector, first_line(exc)) from None
            raise
    return None


async def resolve(
    page: Page,
    target: task_pb2.Target,
    deadline: Deadline,
    test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE,
    *,
    one: bool = True,
) -> ResolvedTarget:
    """Wait (up to the deadline) until one of the target's selectors matches an
    element; the earliest selector in order that matches wins."""
    if is_structured(target):
        return await resolve_locator(page, target, deadline, test_id_attribute, one=one)
    selectors = candidates(target)
    while True:
        either = page.locator(selectors[0])
        for selector in selectors[1:]:
            either = either.or_(page.locator(selector))
        try:
            await either.first.wait_for(state="attached", timeout=deadline.remaining_ms())
        except PlaywrightTimeoutError:
            raise element_not_found(selectors, deadline.total) from None
        except PlaywrightError as exc:
            if is_invalid_selector_error(exc):
                # Tell which of them is at fault.
                for selector in selectors:
                    await check_selector(page, selector)
                raise invalid_selector(" | ".join(selectors), first_line(exc)) from None
            raise
        matched = await _first_matching(page, selectors)
        if matched is not None:
            return ResolvedTarget(matched, page.locator(matched))
        if deadline.expired():
            raise element_not_found(selectors, deadline.total)
        # The element went away between the wait and the count: wait again.


async def resolve_now(
    page: Page, target: task_pb2.Target, test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE
) -> ResolvedTarget:
    """Without waiting: the first selector that matches now, else the main one (for
    steps where no match may be the expected outcome: hidden, detached, count); a
    locator as it is (its assertions wait themselves)."""
    if is_structured(target):
        found = locators.build(page, target.locator, test_id_attribute)
        return ResolvedTarget(locators.describe(target.locator, test_id_attribute), found, strict=True)
    selectors = candidates(target)
    matched = await _first_matching(page, selectors) or selectors[0]
    return ResolvedTarget(matched, page.locator(matched))
