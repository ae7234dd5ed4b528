"""The browser step language in one place: every step, locator, assertion and context
option (its JSON name, what it does, a one-line example, its bounds), and the enums
and limits that the gateway's validator (gateway/validation.py) and the executor
(executor/browser/) both use.

The README's "Browser steps" section is generated from this catalog:

    python -m conveyor.browser_steps --markdown     # print the section
    python -m conveyor.browser_steps --write-readme # replace it between the markers
    python -m conveyor.browser_steps --write-devices # refresh browser_devices.json

and tests/browser/test_steps_catalog.py fails when the README drifts from it, when a
step of the proto has no entry here, or when an example does not pass validation.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---- enums ----------------------------------------------------------------------------
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle", "commit")
LOAD_STATES = ("load", "domcontentloaded", "networkidle")
ELEMENT_STATES = ("visible", "hidden", "attached", "detached")
BUTTONS = ("left", "right", "middle")
COLOR_SCHEMES = ("light", "dark", "no-preference")
REDUCED_MOTION = ("reduce", "no-preference")
SAME_SITE = ("Strict", "Lax", "None")
DIALOG_ACTIONS = ("accept", "dismiss")
DEFAULT_TEST_ID_ATTRIBUTE = "data-testid"
#: The ARIA roles getByRole takes (Playwright's list; the catalog test compares them).
ARIA_ROLES = (
    "alert", "alertdialog", "application", "article", "banner", "blockquote", "button",
    "caption", "cell", "checkbox", "code", "columnheader", "combobox", "complementary",
    "contentinfo", "definition", "deletion", "dialog", "directory", "document", "emphasis",
    "feed", "figure", "form", "generic", "grid", "gridcell", "group", "heading", "img",
    "insertion", "link", "list", "listbox", "listitem", "log", "main", "marquee", "math",
    "menu", "menubar", "menuitem", "menuitemcheckbox", "menuitemradio", "meter", "navigation",
    "none", "note", "option", "paragraph", "presentation", "progressbar", "radio", "radiogroup",
    "region", "row", "rowgroup", "rowheader", "scrollbar", "search", "searchbox", "separator",
    "slider", "spinbutton", "status", "strong", "subscript", "superscript", "switch", "tab",
    "table", "tablist", "tabpanel", "term", "textbox", "time", "timer", "toolbar", "tooltip",
    "tree", "treegrid", "treeitem",
)

# ---- bounds ---------------------------------------------------------------------------
MAX_TEXT = 100_000
MAX_FILES = 64
MAX_CONTENT_TYPE = 255
MAX_STEP_NAME = 128
MAX_SELECTOR = 4096
MAX_FALLBACKS = 16
MAX_URL = 8192
MAX_KEY = 64
MAX_OPTIONS = 256
MAX_OPTION = 1024
MAX_ATTRIBUTE = 256
MAX_SCROLL_PX = 1_000_000
MAX_EXPECT_COUNT = 100_000
MAX_KEY_DELAY_MS = 1000
#: How deep locators nest (within, has, hasNot, frames).
MAX_LOCATOR_DEPTH = 8
MAX_FILTERS = 16
MAX_FRAMES = 8
MAX_NTH = 100_000
#: Expected texts of toHaveText([...]) / classes / values.
MAX_EXPECTED_ITEMS = 1000
MAX_EXPRESSION = 100_000
#: The JSON of an evaluate/waitForFunction argument, an expected value, an event init.
MAX_JSON_BYTES = 100_000
#: The JSON of an evaluate result stored in result.values.
MAX_RESULT_BYTES = 1_000_000
MAX_EVENT_TYPE = 64
MAX_COORDINATE = 100_000
MAX_MOUSE_STEPS = 1000
MAX_POLLING_MS = 60_000
MIN_POLLING_MS = 10
MAX_VIEWPORT_PX = 10_000
MAX_HEADERS = 64
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8192
MAX_COOKIES = 100
MAX_COOKIE_VALUE = 4096
MAX_USER_AGENT = 1024
MAX_PAGE_INDEX = 100
MAX_LOCALE = 35
MAX_TIME_ZONE = 64
MAX_HEADING_LEVEL = 6
VALUE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_.:-]*$")
CSS_PROPERTY = re.compile(r"^(--)?[A-Za-z-][A-Za-z0-9-]*$")
#: Steps whose failure a `soft` flag may turn into a recorded check.
SOFT_STEPS = ("expect", "evaluate")

DEVICES_FILE = Path(__file__).with_name("browser_devices.json")
README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- steps:begin -->", "<!-- steps:end -->"

L = {"locator": {"role": "button", "name": "Save"}}


@dataclass(frozen=True)
class Entry:
    """One thing of the language: its JSON name (as written in a request), the proto
    field it is, a one-line description, an example, and its bounds."""

    name: str
    field: str
    summary: str
    example: dict[str, Any]
    bounds: str = ""


def _step(name: str, field: str, summary: str, example: dict[str, Any], bounds: str = "") -> Entry:
    return Entry(name, field, summary, example, bounds)


#: Every step action (Step's `action` oneof), in the proto's order.
STEPS: tuple[Entry, ...] = (
    _step("navigate", "navigate", "Go to a URL (http/https; the URL policy applies).",
          {"navigate": {"url": "https://example.org/", "waitUntil": "load"}},
          f"url ≤ {MAX_URL}; waitUntil: {'/'.join(WAIT_UNTIL)}"),
    _step("click", "click", "Click an element (double with clickCount 2, right with button).",
          {"click": {"target": L, "button": "left", "clickCount": 1}},
          "button: left/right/middle; clickCount 1-3"),
    _step("fill", "fill", "Replace an input's value.",
          {"fill": {"target": {"locator": {"label": "Name"}}, "text": "Ada"}}, f"text ≤ {MAX_TEXT:,}"),
    _step("type", "type", "Type text key by key (press_sequentially).",
          {"type": {"target": {"selector": "#search"}, "text": "abc", "delay": "0.05s"}},
          "delay 0-1 s per key"),
    _step("clear", "clear", "Clear an input.", {"clear": {"target": {"selector": "#search"}}}),
    _step("press", "press", "Press a key on an element (\"Enter\", \"Control+A\").",
          {"press": {"target": {"selector": "#search"}, "key": "Enter"}}, f"key 1-{MAX_KEY}"),
    _step("hover", "hover", "Move the mouse over an element.", {"hover": {"target": {"selector": "#menu"}}}),
    _step("select", "select", "Choose options of a `<select>` by value or label.",
          {"select": {"target": {"selector": "#color"}, "values": ["g"]}},
          f"≤ {MAX_OPTIONS} values or labels of ≤ {MAX_OPTION}"),
    _step("check", "check", "Check a checkbox or radio button.",
          {"check": {"target": {"locator": {"role": "checkbox", "name": "Agree"}}}}),
    _step("uncheck", "uncheck", "Uncheck a checkbox.", {"uncheck": {"target": {"selector": "#news"}}}),
    _step("scroll", "scroll", "Scroll an element into view, or the page by dx/dy.",
          {"scroll": {"dy": 800}}, f"dx/dy ±{MAX_SCROLL_PX:,} px"),
    _step("wait", "wait", "Wait for an element state, a duration, a URL or a load state.",
          {"wait": {"target": {"selector": "#late"}, "state": "visible"}},
          f"state: {'/'.join(ELEMENT_STATES)}; duration ≤ the job's time limit"),
    _step("expect", "expect", "Assert (web-first: auto-waits up to the step timeout); see Assertions.",
          {"expect": {"target": {"selector": "#out"}, "text": {"value": "Hello Ada"}}}),
    _step("extract", "extract", "Read text, an attribute or HTML (of one or all matches) into result.values.",
          {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
          f"key: {VALUE_KEY.pattern}; attribute ≤ {MAX_ATTRIBUTE}"),
    _step("screenshot", "screenshot", "Screenshot the page, the full page or an element, as an artifact.",
          {"screenshot": {"fullPage": True}}),
    _step("upload", "upload", "Set the files of an `<input type=file>` from browser.files.",
          {"upload": {"target": {"selector": "#file"}, "files": ["report.pdf"]}}, f"≤ {MAX_FILES} names"),
    _step("evaluate", "evaluate",
          "Run JavaScript (expression or function with arg; with a target, on the element); "
          "store its JSON under key and/or poll until it equals expected.",
          {"evaluate": {"expression": "(k) => localStorage.getItem(k)", "arg": "todos", "key": "stored"}},
          f"expression ≤ {MAX_EXPRESSION:,}; arg/expected ≤ {MAX_JSON_BYTES:,} bytes of JSON; "
          f"result ≤ {MAX_RESULT_BYTES:,}"),
    _step("waitForFunction", "wait_for_function", "Wait until a JavaScript expression or function is truthy.",
          {"waitForFunction": {"expression": "() => document.querySelectorAll('li').length > 2"}},
          f"polling {MIN_POLLING_MS} ms-{MAX_POLLING_MS // 1000} s (every frame when unset)"),
    _step("goBack", "go_back", "Go back in the page's history.", {"goBack": {}}, "waitUntil as navigate"),
    _step("goForward", "go_forward", "Go forward in the page's history.", {"goForward": {"waitUntil": "load"}}),
    _step("reload", "reload", "Reload the page.", {"reload": {}}),
    _step("focus", "focus", "Focus an element.", {"focus": {"target": {"locator": {"placeholder": "Search"}}}}),
    _step("blur", "blur", "Take the focus from an element.", {"blur": {"target": {"selector": "#search"}}}),
    _step("dispatchEvent", "dispatch_event", "Dispatch a DOM event on an element.",
          {"dispatchEvent": {"target": {"selector": "#todo"}, "type": "dblclick", "eventInit": {"bubbles": True}}},
          f"type 1-{MAX_EVENT_TYPE}"),
    _step("drag", "drag", "Drag one element onto another.",
          {"drag": {"source": {"selector": "#card"}, "target": {"selector": "#done"}}}),
    _step("keyboard", "keyboard", "Keyboard without a target: press, type, down, up or insertText.",
          {"keyboard": {"press": "Control+A"}}, f"key ≤ {MAX_KEY}; text ≤ {MAX_TEXT:,}"),
    _step("mouse", "mouse", "Mouse without a target: move, click, down, up or wheel at page coordinates.",
          {"mouse": {"click": {"x": 120, "y": 40}}},
          f"x/y 0-{MAX_COORDINATE:,}; wheel ±{MAX_SCROLL_PX:,}; steps ≤ {MAX_MOUSE_STEPS}"),
    _step("dialog", "dialog",
          "Answer the dialogs opened from now on (accept, dismiss, prompt text); set before the step that opens them.",
          {"dialog": {"action": "accept", "promptText": "yes", "key": "dialog_message"}},
          "action: accept/dismiss (default: dismissed)"),
    _step("switchPage", "switch_page", "Act on another page: a popup or new tab (new), by index, or by URL.",
          {"switchPage": {"new": True}}, f"index 0-{MAX_PAGE_INDEX}"),
    _step("download", "download", "Click an element and save the download it starts as an artifact.",
          {"download": {"target": {"locator": {"role": "link", "name": "Export"}}}},
          "the job's artifact budget"),
)

#: Ways to pick elements (Locator's `by` oneof) and the locator's refinements.
LOCATORS: tuple[Entry, ...] = (
    Entry("role", "role", "getByRole: an ARIA role, with name/exact and ARIA states (checked, level...).",
          {"locator": {"role": "button", "name": "Save", "exact": True}}, "one of Playwright's ARIA roles"),
    Entry("text", "text", "getByText: substring, case-insensitive (exact: whole, case-sensitive).",
          {"locator": {"text": "Welcome"}}, f"≤ {MAX_TEXT:,}"),
    Entry("label", "label", "getByLabel: a form control by its label.", {"locator": {"label": "Email"}}),
    Entry("placeholder", "placeholder", "getByPlaceholder.", {"locator": {"placeholder": "What needs to be done?"}}),
    Entry("altText", "alt_text", "getByAltText: an image by its alt text.", {"locator": {"altText": "Logo"}}),
    Entry("title", "title", "getByTitle: by the title attribute.", {"locator": {"title": "Close"}}),
    Entry("testId", "test_id", "getByTestId (attribute: context.testIdAttribute, default data-testid).",
          {"locator": {"testId": "todo-item"}}),
    Entry("css", "css", "locator(css): a CSS selector.", {"locator": {"css": "ul.todo-list > li"}},
          f"≤ {MAX_SELECTOR:,}"),
    Entry("xpath", "xpath", "locator('xpath=...').", {"locator": {"xpath": "//footer//a"}}, f"≤ {MAX_SELECTOR:,}"),
    Entry("regex", "regex", "Read the text (or role name) as a regular expression.",
          {"locator": {"text": "^Item \\d+$", "regex": True, "ignoreCase": True}}),
    Entry("filters", "filters", "locator.filter: hasText, hasNotText, has, hasNot, visible, in order.",
          {"locator": {"css": "li", "filters": [{"hasText": "Milk"}, {"hasNot": {"css": ".done"}}]}},
          f"≤ {MAX_FILTERS}"),
    Entry("nth", "nth", "The n-th match (0-based, -1 last); or first / last: true.",
          {"locator": {"testId": "todo-item", "nth": 1}}, f"±{MAX_NTH:,}"),
    Entry("within", "within", "Search inside another locator's elements (a chain).",
          {"locator": {"role": "button", "name": "Delete", "within": {"css": "li", "filters": [{"hasText": "Milk"}]}}},
          f"nesting ≤ {MAX_LOCATOR_DEPTH}"),
    Entry("frames", "frames", "Enter iframes first (each a locator of an `<iframe>`), outermost first.",
          {"locator": {"role": "button", "name": "Pay", "frames": [{"css": "iframe#checkout"}]}},
          f"≤ {MAX_FRAMES}"),
)

#: Assertions (ExpectAction's `condition` oneof); each takes `"not": true`.
ASSERTIONS: tuple[Entry, ...] = (
    Entry("visible", "visible", "toBeVisible (false: hidden).", {"expect": {"target": L, "visible": True}}),
    Entry("hidden", "hidden", "toBeHidden.", {"expect": {"target": {"selector": "#spinner"}, "hidden": True}}),
    Entry("textContains", "text_contains", "toContainText with a string (kept from v1).",
          {"expect": {"target": {"selector": "#out"}, "textContains": "Hello"}}, f"≤ {MAX_TEXT:,}"),
    Entry("textEquals", "text_equals", "toHaveText with a string (kept from v1).",
          {"expect": {"target": {"selector": "#out"}, "textEquals": "Hello Ada"}}, f"≤ {MAX_TEXT:,}"),
    Entry("value", "value", "toHaveValue with a string (kept from v1).",
          {"expect": {"target": {"selector": "#email"}, "value": "a@b.c"}}),
    Entry("count", "count", "toHaveCount: how many elements match.",
          {"expect": {"target": {"locator": {"css": "li"}}, "count": 3}}, f"0-{MAX_EXPECT_COUNT:,}"),
    Entry("titleContains", "title_contains", "The page title contains a string (kept from v1).",
          {"expect": {"titleContains": "Todo"}}),
    Entry("urlContains", "url_contains", "The page URL contains a string (kept from v1).",
          {"expect": {"urlContains": "#/active"}}),
    Entry("text", "text",
          "toHaveText / toContainText (contains): a string, a regex, or values: one per element in order; ignoreCase.",
          {"expect": {"target": {"locator": {"testId": "todo-title"}}, "text": {"values": ["Milk", "Eggs"]}}},
          f"≤ {MAX_EXPECTED_ITEMS} values"),
    Entry("inputValue", "input_value", "toHaveValue: a string or a regex.",
          {"expect": {"target": {"selector": "#email"}, "inputValue": {"value": "@example\\.org$", "regex": True}}}),
    Entry("inputValues", "input_values", "toHaveValues: the selected options of a `<select multiple>`.",
          {"expect": {"target": {"selector": "#sizes"}, "inputValues": {"values": ["s", "l"]}}}),
    Entry("attribute", "attribute", "toHaveAttribute: present, or with a value (string or regex).",
          {"expect": {"target": {"selector": "a"}, "attribute": {"name": "href", "value": {"value": "/docs"}}}}),
    Entry("class", "class_name", "toHaveClass (string, regex, values per element) / toContainClass (contains).",
          {"expect": {"target": {"selector": "li"}, "class": {"value": "completed", "contains": True}}}),
    Entry("css", "css", "toHaveCSS: a computed style property.",
          {"expect": {"target": {"selector": "#out"}, "css": {"name": "color", "value": {"value": "rgb(0, 0, 0)"}}}}),
    Entry("checked", "checked", "toBeChecked (false: unchecked).",
          {"expect": {"target": {"selector": "#agree"}, "checked": True}}),
    Entry("enabled", "enabled", "toBeEnabled (false: disabled).", {"expect": {"target": L, "enabled": True}}),
    Entry("disabled", "disabled", "toBeDisabled.", {"expect": {"target": L, "disabled": True}}),
    Entry("editable", "editable", "toBeEditable.", {"expect": {"target": {"selector": "#name"}, "editable": True}}),
    Entry("focused", "focused", "toBeFocused.", {"expect": {"target": {"selector": "#name"}, "focused": True}}),
    Entry("attached", "attached", "toBeAttached (false: detached).",
          {"expect": {"target": {"selector": "#toast"}, "attached": False}}),
    Entry("inViewport", "in_viewport", "toBeInViewport.",
          {"expect": {"target": {"selector": "#footer"}, "inViewport": True}}),
    Entry("empty", "empty", "toBeEmpty: no text (or an empty input).",
          {"expect": {"target": {"selector": "#out"}, "empty": True}}),
    Entry("url", "url", "toHaveURL: the whole URL, or a regex searched in it.",
          {"expect": {"url": {"value": "/#/completed$", "regex": True}}}),
    Entry("title", "title", "toHaveTitle: the whole title, or a regex.", {"expect": {"title": {"value": "Todo"}}}),
    Entry("not", "negate", "Negates any assertion (expect(...).not).",
          {"expect": {"target": {"selector": "#out"}, "text": {"value": "Error", "contains": True}, "not": True}}),
    Entry("soft", "soft", "On the step: a failed check is recorded, the job goes on and fails at the end.",
          {"soft": True, "expect": {"title": {"value": "Todo"}}}),
)

#: Task-level context options (BrowserTask.context).
CONTEXT_OPTIONS: tuple[Entry, ...] = (
    Entry("viewport", "viewport", "The viewport size in CSS pixels.",
          {"context": {"viewport": {"width": 1280, "height": 720}}}, f"1-{MAX_VIEWPORT_PX:,} px"),
    Entry("device", "device", "A device of Playwright's list (user agent, viewport, scale, mobile, touch).",
          {"context": {"device": "iPhone 13"}}, "a name in conveyor/browser_devices.json"),
    Entry("userAgent", "user_agent", "The user agent.", {"context": {"userAgent": "conveyor-test/1.0"}},
          f"≤ {MAX_USER_AGENT}"),
    Entry("locale", "locale", "navigator.language, Accept-Language and formats.", {"context": {"locale": "de-DE"}},
          "a BCP 47 tag"),
    Entry("timezoneId", "timezone_id", "The time zone.", {"context": {"timezoneId": "Europe/Berlin"}}, "an IANA name"),
    Entry("colorScheme", "color_scheme", "prefers-color-scheme.", {"context": {"colorScheme": "dark"}},
          "/".join(COLOR_SCHEMES)),
    Entry("reducedMotion", "reduced_motion", "prefers-reduced-motion.", {"context": {"reducedMotion": "reduce"}},
          "/".join(REDUCED_MOTION)),
    Entry("extraHttpHeaders", "extra_http_headers", "Headers sent with every request.",
          {"context": {"extraHttpHeaders": {"X-Test": "1"}}}, f"≤ {MAX_HEADERS}; value ≤ {MAX_HEADER_VALUE:,}"),
    Entry("cookies", "cookies", "Cookies set before the first step (url, or domain and path).",
          {"context": {"cookies": [{"name": "seen", "value": "1", "url": "https://example.org"}]}},
          f"≤ {MAX_COOKIES}; value ≤ {MAX_COOKIE_VALUE:,}"),
    Entry("testIdAttribute", "test_id_attribute", "The attribute testId locators read.",
          {"context": {"testIdAttribute": "data-test"}}, f"default {DEFAULT_TEST_ID_ATTRIBUTE}"),
)

STEP_NAMES = tuple(e.field for e in STEPS)
TARGETED = ("click", "fill", "type", "clear", "press", "hover", "select", "check", "uncheck", "upload",
            "focus", "blur", "dispatch_event", "download")


@functools.cache
def devices() -> dict[str, dict[str, Any]]:
    """Playwright's device descriptors by name (a copy of `playwright.devices`)."""
    data: dict[str, dict[str, Any]] = json.loads(DEVICES_FILE.read_text(encoding="utf-8"))
    return data


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _table(entries: tuple[Entry, ...], first: str) -> list[str]:
    rows = [f"| {first} | what it does | example | bounds |", "|---|---|---|---|"]
    for e in entries:
        example = _json(e.example).replace("|", "\\|")
        rows.append(f"| `{e.name}` | {e.summary.replace('|', '/')} | `{example}` | {e.bounds} |")
    return rows


def markdown() -> str:
    """The README's "Browser steps" section (between the markers)."""
    lines = [
        "Every step may carry `name`, `timeout` (auto-waiting included) and, for checks, `soft`.",
        "A target is `{\"selector\": S, \"fallbacks\": [...]}` (any Playwright selector; the first",
        "match is used) or `{\"locator\": {...}}` (strict, as in Playwright: an action needs exactly",
        "one element, and an error gives the count and the locator in Playwright's form).",
        "",
        "**Steps**",
        "",
        *_table(STEPS, "step"),
        "",
        "**Locators** (`target.locator`; built in the order frames → within → pick → filters → nth)",
        "",
        *_table(LOCATORS, "locator"),
        "",
        "**Assertions** (`expect`; each auto-waits up to the step timeout and takes `\"not\": true`)",
        "",
        *_table(ASSERTIONS, "assertion"),
        "",
        "**Context options** (`browser.context`)",
        "",
        *_table(CONTEXT_OPTIONS, "option"),
    ]
    return "\n".join(lines) + "\n"


def readme_section(text: str) -> str:
    """What the README has between the markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def _write_readme() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + markdown() + text[end:], encoding="utf-8")


def _write_devices() -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        data = {name: dict(p.devices[name]) for name in sorted(p.devices)}
    DEVICES_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the README section")
    group.add_argument("--write-readme", action="store_true", help="replace the README section")
    group.add_argument("--write-devices", action="store_true", help="refresh browser_devices.json")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    elif args.write_readme:
        _write_readme()
    else:
        _write_devices()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
