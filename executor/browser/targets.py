"""Targets: a Playwright selector plus fallbacks, resolved to the first that matches,
or a structured locator (locators.py), which is strict as in Playwright: an action
needs exactly one element, and "none" or "several" is the step's error.

Waiting is event-driven: one wait for *any* candidate (`a.or_(b).or_(c)`), so the
fallbacks do not each burn the step's timeout; then a quick count per candidate, in
order, says which one matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.browser_steps import DEFAULT_TEST_ID_ATTRIBUTE
from conveyor.v1 import task_pb2
from executor.browser import locators
from executor.browser.step_errors import (
    element_not_found,
    first_line,
    invalid_selector,
    invalid_step,
    is_invalid_selector_error,
    locator_not_found,
    strict_mode_violation,
)
from executor.browser.timing import Deadline


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
