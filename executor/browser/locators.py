"""Structured locators (`Target.locator`), built with Playwright's public locator API
(page.get_by_role(...), locator.filter(...), locator.content_frame...) and described
in Playwright's own notation for errors: `getByRole('button', { name: 'Save' })`."""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from playwright.async_api import FrameLocator, Locator, Page

from conveyor.browser_steps import DEFAULT_TEST_ID_ATTRIBUTE
from conveyor.v1 import task_pb2

Scope = Page | FrameLocator | Locator
AriaRole = Literal["button"]  # any of conveyor.browser_steps.ARIA_ROLES; checked at submit
_ROLE_STATES = ("checked", "disabled", "expanded", "pressed", "selected")


def pattern(text: str, regex: bool, ignore_case: bool = False) -> str | re.Pattern[str]:
    """A string, or the compiled regular expression Playwright takes instead."""
    if not regex:
        return text
    return re.compile(text, re.IGNORECASE if ignore_case else 0)


def _css_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pick(scope: Scope, loc: task_pb2.Locator, test_id_attribute: str) -> Locator:
    by = loc.WhichOneof("by")
    value: str = getattr(loc, by) if by else ""
    text = pattern(value, loc.regex, loc.ignore_case)
    exact = True if loc.exact else None
    if by == "role":
        options: dict[str, Any] = {}
        if loc.name:
            options["name"] = pattern(loc.name, loc.regex, loc.ignore_case)
            if loc.exact:
                options["exact"] = True
        for state in _ROLE_STATES:
            if loc.HasField(state):  # type: ignore[arg-type]
                options[state] = getattr(loc, state)
        if loc.level:
            options["level"] = loc.level
        if loc.include_hidden:
            options["include_hidden"] = True
        return scope.get_by_role(cast(AriaRole, value), **options)
    if by == "text":
        return scope.get_by_text(text, exact=exact)
    if by == "label":
        return scope.get_by_label(text, exact=exact)
    if by == "placeholder":
        return scope.get_by_placeholder(text, exact=exact)
    if by == "alt_text":
        return scope.get_by_alt_text(text, exact=exact)
    if by == "title":
        return scope.get_by_title(text, exact=exact)
    if by == "test_id":
        if test_id_attribute == DEFAULT_TEST_ID_ATTRIBUTE:
            return scope.get_by_test_id(text)
        # Playwright's test id attribute is one setting for the whole process; another
        # attribute is read with a plain CSS attribute selector (regexes are refused
        # at submit for it).
        return scope.locator(f"[{test_id_attribute}={_css_string(value)}]")
    if by == "css":
        return scope.locator(value)
    if by == "xpath":
        return scope.locator(f"xpath={value}")
    raise ValueError("a locator needs one of role, text, label, placeholder, altText, title, testId, css, xpath")


def build(page: Page, loc: task_pb2.Locator, test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE) -> Locator:
    return _build(page, loc, test_id_attribute)


def _build(scope: Scope, loc: task_pb2.Locator, attr: str) -> Locator:
    for frame in loc.frames:
        scope = _build(scope, frame, attr).content_frame
    # The page or frame the elements are in: has/hasNot locators are built from it.
    base = scope if not isinstance(scope, Locator) else None
    if loc.HasField("within"):
        scope = _build(scope, loc.within, attr)
    found = _pick(scope, loc, attr)
    page_scope: Scope = base if base is not None else found.page
    for f in loc.filters:
        options: dict[str, Any] = {}
        if f.has_text:
            options["has_text"] = pattern(f.has_text, f.regex, f.ignore_case)
        if f.has_not_text:
            options["has_not_text"] = pattern(f.has_not_text, f.regex, f.ignore_case)
        # Inner locators of has/hasNot are relative to the element being filtered:
        # Playwright wants them built from the page (or frame) itself.
        if f.HasField("has"):
            options["has"] = _build(page_scope, f.has, attr)
        if f.HasField("has_not"):
            options["has_not"] = _build(page_scope, f.has_not, attr)
        if f.HasField("visible"):
            options["visible"] = f.visible
        found = found.filter(**options)
    if loc.HasField("nth"):
        found = found.nth(loc.nth)
    elif loc.first:
        found = found.first
    elif loc.last:
        found = found.last
    return found


# ---- descriptions in Playwright's notation ---------------------------------------------


def _js(value: str | bool | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _text(value: str, regex: bool, ignore_case: bool) -> str:
    if regex:
        return f"/{value}/" + ("i" if ignore_case else "")
    return _js(value)


def _options(pairs: list[tuple[str, str]]) -> str:
    return ", { " + ", ".join(f"{k}: {v}" for k, v in pairs) + " }" if pairs else ""


_METHODS = {
    "text": "getByText", "label": "getByLabel", "placeholder": "getByPlaceholder",
    "alt_text": "getByAltText", "title": "getByTitle",
}


def _describe_pick(loc: task_pb2.Locator, attr: str) -> str:
    by = loc.WhichOneof("by") or ""
    value: str = getattr(loc, by) if by else ""
    if by == "role":
        pairs: list[tuple[str, str]] = []
        if loc.name:
            pairs.append(("name", _text(loc.name, loc.regex, loc.ignore_case)))
            if loc.exact:
                pairs.append(("exact", "true"))
        pairs += [(s, _js(getattr(loc, s))) for s in _ROLE_STATES if loc.HasField(s)]  # type: ignore[arg-type]
        if loc.level:
            pairs.append(("level", str(loc.level)))
        if loc.include_hidden:
            pairs.append(("includeHidden", "true"))
        return f"getByRole({_js(value)}{_options(pairs)})"
    if by in _METHODS:
        exact = [("exact", "true")] if loc.exact else []
        return f"{_METHODS[by]}({_text(value, loc.regex, loc.ignore_case)}{_options(exact)})"
    if by == "test_id":
        if attr != DEFAULT_TEST_ID_ATTRIBUTE:
            return f"locator({_js(f'[{attr}={_css_string(value)}]')})"
        return f"getByTestId({_text(value, loc.regex, loc.ignore_case)})"
    if by == "css":
        return f"locator({_js(value)})"
    if by == "xpath":
        return f"locator({_js('xpath=' + value)})"
    return "locator(?)"


def describe(loc: task_pb2.Locator, test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE) -> str:
    """The locator as Playwright (JS) writes it, e.g.
    `locator('iframe').contentFrame().getByRole('button', { name: 'Pay' }).nth(1)`."""
    parts: list[str] = [describe(f, test_id_attribute) + ".contentFrame()" for f in loc.frames]
    if loc.HasField("within"):
        parts.append(describe(loc.within, test_id_attribute))
    parts.append(_describe_pick(loc, test_id_attribute))
    for f in loc.filters:
        pairs: list[tuple[str, str]] = []
        if f.has_text:
            pairs.append(("hasText", _text(f.has_text, f.regex, f.ignore_case)))
        if f.has_not_text:
            pairs.append(("hasNotText", _text(f.has_not_text, f.regex, f.ignore_case)))
        if f.HasField("has"):
            pairs.append(("has", describe(f.has, test_id_attribute)))
        if f.HasField("has_not"):
            pairs.append(("hasNot", describe(f.has_not, test_id_attribute)))
        if f.HasField("visible"):
            pairs.append(("visible", _js(f.visible)))
        parts.append("filter({ " + ", ".join(f"{k}: {v}" for k, v in pairs) + " })")
    if loc.HasField("nth"):
        parts.append(f"nth({loc.nth})")
    elif loc.first:
        parts.append("first()")
    elif loc.last:
        parts.append("last()")
    return ".".join(parts)


def selectors_in(loc: task_pb2.Locator) -> list[str]:
    """The CSS and XPath selectors a locator carries (checked before the steps run)."""
    found: list[str] = []
    by = loc.WhichOneof("by")
    if by == "css":
        found.append(loc.css)
    elif by == "xpath":
        found.append("xpath=" + loc.xpath)
    for inner in [*loc.frames, *([loc.within] if loc.HasField("within") else [])]:
        found += selectors_in(inner)
    for f in loc.filters:
        for inner in [f.has] if f.HasField("has") else []:
            found += selectors_in(inner)
        for inner in [f.has_not] if f.HasField("has_not") else []:
            found += selectors_in(inner)
    return found

