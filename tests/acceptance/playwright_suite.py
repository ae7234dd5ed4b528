"""The acceptance suite in plain Playwright for Python: 24 tests of the vendored
TodoMVC app (tests/acceptance/app/), modeled test for test on Playwright's own
demo suite for TodoMVC (`demo-todo-app.spec.ts`, which `npm init playwright` ships):
the same groups, tests, steps and checks, localStorage read back with
`page.wait_for_function` as there.

Differences, because this app is the VanillaJS TodoMVC and not Playwright's demo
build: it has no `data-testid` attributes (items are `#todo-list li`, titles their
`label`, the counter `#todo-count`), its edit box has no accessible name (it is
`input.edit` in the item), it stores `{"todos": [...]}` under `todos-vanillajs`
(not a list under `react-todos`), and it saves an edited title untrimmed (it shows
it trimmed: the trim test checks the stored title trimmed).

`run_suite(app_url)` runs it as a Playwright user does: sequentially, one browser,
a fresh context and page per test, each starting at the app (the demo's
`beforeEach`), and returns each test's outcome. Conveyor's translation, check for
check, is conveyor_suite.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from playwright.sync_api import Page, expect, sync_playwright

TODO_ITEMS = ["buy some cheese", "feed the cat", "book a doctors appointment"]
STORE = "todos-vanillajs"
NEW_TODO = "What needs to be done?"
ITEMS = "#todo-list li"
TITLES = "#todo-list li label"
COUNT = "#todo-count"
DEFAULT_CHROMIUM = "/usr/bin/chromium"


# --- the demo's helpers ---------------------------------------------------------------------

def create_default_todos(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    for item in TODO_ITEMS:
        new_todo.fill(item)
        new_todo.press("Enter")


def check_number_of_todos_in_local_storage(page: Page, expected: int) -> None:
    page.wait_for_function(
        f"e => JSON.parse(localStorage['{STORE}']).todos.length === e", arg=expected
    )


def check_number_of_completed_todos_in_local_storage(page: Page, expected: int) -> None:
    page.wait_for_function(
        f"e => JSON.parse(localStorage['{STORE}']).todos.filter(t => t.completed).length === e",
        arg=expected,
    )


def check_todos_in_local_storage(page: Page, title: str) -> None:
    page.wait_for_function(
        f"t => JSON.parse(localStorage['{STORE}']).todos.map(t => t.title).includes(t)", arg=title
    )


# --- New Todo ---------------------------------------------------------------------------------

def test_new_todo_add_items(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    new_todo.fill(TODO_ITEMS[0])
    new_todo.press("Enter")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0]])
    new_todo.fill(TODO_ITEMS[1])
    new_todo.press("Enter")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[1]])
    check_number_of_todos_in_local_storage(page, 2)


def test_new_todo_clears_input(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    new_todo.fill(TODO_ITEMS[0])
    new_todo.press("Enter")
    expect(new_todo).to_be_empty()
    check_number_of_todos_in_local_storage(page, 1)


def test_new_todo_appends_to_bottom(page: Page) -> None:
    create_default_todos(page)
    todo_count = page.locator(COUNT)
    expect(page.get_by_text("3 items left")).to_be_visible()
    expect(todo_count).to_have_text("3 items left")
    expect(todo_count).to_contain_text("3")
    expect(todo_count).to_have_text(re.compile("3"))
    expect(page.locator(TITLES)).to_have_text(TODO_ITEMS)
    check_number_of_todos_in_local_storage(page, 3)


# --- Mark all as completed (beforeEach: 3 todos, 3 stored; afterEach: 3 stored) ---------------

def _mark_all_before(page: Page) -> None:
    create_default_todos(page)
    check_number_of_todos_in_local_storage(page, 3)


def test_mark_all_completed(page: Page) -> None:
    _mark_all_before(page)
    page.get_by_label("Mark all as complete").check()
    expect(page.locator(ITEMS)).to_have_class(["completed", "completed", "completed"])
    check_number_of_completed_todos_in_local_storage(page, 3)
    check_number_of_todos_in_local_storage(page, 3)


def test_mark_all_clear_complete_state(page: Page) -> None:
    _mark_all_before(page)
    page.get_by_label("Mark all as complete").check()
    page.get_by_label("Mark all as complete").uncheck()
    expect(page.locator(ITEMS)).to_have_class(["", "", ""])
    check_number_of_todos_in_local_storage(page, 3)


def test_mark_all_checkbox_follows_items(page: Page) -> None:
    _mark_all_before(page)
    toggle_all = page.get_by_label("Mark all as complete")
    toggle_all.check()
    expect(toggle_all).to_be_checked()
    check_number_of_completed_todos_in_local_storage(page, 3)
    first_todo = page.locator(ITEMS).nth(0)
    first_todo.get_by_role("checkbox").uncheck()
    expect(toggle_all).not_to_be_checked()
    first_todo.get_by_role("checkbox").check()
    check_number_of_completed_todos_in_local_storage(page, 3)
    expect(toggle_all).to_be_checked()
    check_number_of_todos_in_local_storage(page, 3)


# --- Item ---------------------------------------------------------------------------------------

def test_item_mark_complete(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    for item in TODO_ITEMS[:2]:
        new_todo.fill(item)
        new_todo.press("Enter")
    first_todo = page.locator(ITEMS).nth(0)
    first_todo.get_by_role("checkbox").check()
    expect(first_todo).to_have_class("completed")
    second_todo = page.locator(ITEMS).nth(1)
    expect(second_todo).not_to_have_class("completed")
    second_todo.get_by_role("checkbox").check()
    expect(first_todo).to_have_class("completed")
    expect(second_todo).to_have_class("completed")


def test_item_unmark_complete(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    for item in TODO_ITEMS[:2]:
        new_todo.fill(item)
        new_todo.press("Enter")
    first_todo = page.locator(ITEMS).nth(0)
    second_todo = page.locator(ITEMS).nth(1)
    first_todo.get_by_role("checkbox").check()
    expect(first_todo).to_have_class("completed")
    expect(second_todo).not_to_have_class("completed")
    check_number_of_completed_todos_in_local_storage(page, 1)
    first_todo.get_by_role("checkbox").uncheck()
    expect(first_todo).not_to_have_class("completed")
    expect(second_todo).not_to_have_class("completed")
    check_number_of_completed_todos_in_local_storage(page, 0)


def test_item_edit(page: Page) -> None:
    create_default_todos(page)
    second_todo = page.locator(ITEMS).nth(1)
    second_todo.dblclick()
    expect(second_todo.locator(".edit")).to_have_value(TODO_ITEMS[1])
    second_todo.locator(".edit").fill("buy some sausages")
    second_todo.locator(".edit").press("Enter")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    check_todos_in_local_storage(page, "buy some sausages")


# --- Editing (beforeEach: 3 todos, 3 stored) ------------------------------------------------------

def _editing_before(page: Page) -> None:
    create_default_todos(page)
    check_number_of_todos_in_local_storage(page, 3)


def test_editing_hides_other_controls(page: Page) -> None:
    _editing_before(page)
    todo_item = page.locator(ITEMS).nth(1)
    todo_item.dblclick()
    expect(todo_item.get_by_role("checkbox")).not_to_be_visible()
    expect(todo_item.locator("label", has_text=TODO_ITEMS[1])).not_to_be_visible()
    check_number_of_todos_in_local_storage(page, 3)


def test_editing_saves_on_blur(page: Page) -> None:
    _editing_before(page)
    todo_items = page.locator(ITEMS)
    todo_items.nth(1).dblclick()
    todo_items.nth(1).locator(".edit").fill("buy some sausages")
    todo_items.nth(1).locator(".edit").dispatch_event("blur")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    check_todos_in_local_storage(page, "buy some sausages")


def test_editing_trims_text(page: Page) -> None:
    _editing_before(page)
    todo_items = page.locator(ITEMS)
    todo_items.nth(1).dblclick()
    todo_items.nth(1).locator(".edit").fill("    buy some sausages    ")
    todo_items.nth(1).locator(".edit").press("Enter")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    # This app stores the edited title as typed (the demo's stores it trimmed).
    page.wait_for_function(
        f"t => JSON.parse(localStorage['{STORE}']).todos.map(t => t.title.trim()).includes(t)",
        arg="buy some sausages",
    )


def test_editing_empty_text_removes_item(page: Page) -> None:
    _editing_before(page)
    todo_items = page.locator(ITEMS)
    todo_items.nth(1).dblclick()
    todo_items.nth(1).locator(".edit").fill("")
    todo_items.nth(1).locator(".edit").press("Enter")
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[2]])
    check_number_of_todos_in_local_storage(page, 2)


def test_editing_cancels_on_escape(page: Page) -> None:
    _editing_before(page)
    todo_items = page.locator(ITEMS)
    todo_items.nth(1).dblclick()
    todo_items.nth(1).locator(".edit").fill("buy some sausages")
    todo_items.nth(1).locator(".edit").press("Escape")
    expect(page.locator(TITLES)).to_have_text(TODO_ITEMS)
    check_todos_in_local_storage(page, TODO_ITEMS[1])


# --- Counter --------------------------------------------------------------------------------------

def test_counter_shows_number_of_items(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    todo_count = page.locator(COUNT)
    new_todo.fill(TODO_ITEMS[0])
    new_todo.press("Enter")
    expect(todo_count).to_contain_text("1")
    new_todo.fill(TODO_ITEMS[1])
    new_todo.press("Enter")
    expect(todo_count).to_contain_text("2")
    check_number_of_todos_in_local_storage(page, 2)


# --- Clear completed button (beforeEach: 3 todos) --------------------------------------------------

def test_clear_completed_shows_text(page: Page) -> None:
    create_default_todos(page)
    page.locator(".toggle").first.check()
    expect(page.get_by_role("button", name="Clear completed")).to_be_visible()


def test_clear_completed_removes_items(page: Page) -> None:
    create_default_todos(page)
    todo_items = page.locator(ITEMS)
    todo_items.nth(1).get_by_role("checkbox").check()
    page.get_by_role("button", name="Clear completed").click()
    expect(todo_items).to_have_count(2)
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[2]])


def test_clear_completed_hidden_without_completed(page: Page) -> None:
    create_default_todos(page)
    page.locator(".toggle").first.check()
    page.get_by_role("button", name="Clear completed").click()
    expect(page.get_by_role("button", name="Clear completed")).to_be_hidden()


# --- Persistence -----------------------------------------------------------------------------------

def test_persistence(page: Page) -> None:
    new_todo = page.get_by_placeholder(NEW_TODO)
    for item in TODO_ITEMS[:2]:
        new_todo.fill(item)
        new_todo.press("Enter")
    todo_items = page.locator(ITEMS)
    first_checkbox = todo_items.nth(0).get_by_role("checkbox")
    first_checkbox.check()
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[1]])
    expect(first_checkbox).to_be_checked()
    expect(todo_items).to_have_class(["completed", ""])
    check_number_of_completed_todos_in_local_storage(page, 1)
    page.reload()
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[1]])
    expect(first_checkbox).to_be_checked()
    expect(todo_items).to_have_class(["completed", ""])


# --- Routing (beforeEach: 3 todos, the first stored) ---------------------------------------------------

def _routing_before(page: Page) -> None:
    create_default_todos(page)
    check_todos_in_local_storage(page, TODO_ITEMS[0])


def test_routing_active_items(page: Page) -> None:
    _routing_before(page)
    page.locator(ITEMS).nth(1).get_by_role("checkbox").check()
    check_number_of_completed_todos_in_local_storage(page, 1)
    page.get_by_role("link", name="Active").click()
    expect(page.locator(ITEMS)).to_have_count(2)
    expect(page.locator(TITLES)).to_have_text([TODO_ITEMS[0], TODO_ITEMS[2]])


def test_routing_back_button(page: Page) -> None:
    _routing_before(page)
    page.locator(ITEMS).nth(1).get_by_role("checkbox").check()
    check_number_of_completed_todos_in_local_storage(page, 1)
    page.get_by_role("link", name="All").click()
    expect(page.locator(ITEMS)).to_have_count(3)
    page.get_by_role("link", name="Active").click()
    page.get_by_role("link", name="Completed").click()
    expect(page.locator(ITEMS)).to_have_count(1)
    page.go_back()
    expect(page.locator(ITEMS)).to_have_count(2)
    page.go_back()
    expect(page.locator(ITEMS)).to_have_count(3)


def test_routing_completed_items(page: Page) -> None:
    _routing_before(page)
    page.locator(ITEMS).nth(1).get_by_role("checkbox").check()
    check_number_of_completed_todos_in_local_storage(page, 1)
    page.get_by_role("link", name="Completed").click()
    expect(page.locator(ITEMS)).to_have_count(1)


def test_routing_all_items(page: Page) -> None:
    _routing_before(page)
    page.locator(ITEMS).nth(1).get_by_role("checkbox").check()
    check_number_of_completed_todos_in_local_storage(page, 1)
    page.get_by_role("link", name="Active").click()
    page.get_by_role("link", name="Completed").click()
    page.get_by_role("link", name="All").click()
    expect(page.locator(ITEMS)).to_have_count(3)


def test_routing_highlights_filter(page: Page) -> None:
    _routing_before(page)
    expect(page.get_by_role("link", name="All")).to_have_class("selected")
    page.get_by_role("link", name="Active").click()
    expect(page.get_by_role("link", name="Active")).to_have_class("selected")
    page.get_by_role("link", name="Completed").click()
    expect(page.get_by_role("link", name="Completed")).to_have_class("selected")


TESTS: list[Callable[[Page], None]] = [
    test_new_todo_add_items,
    test_new_todo_clears_input,
    test_new_todo_appends_to_bottom,
    test_mark_all_completed,
    test_mark_all_clear_complete_state,
    test_mark_all_checkbox_follows_items,
    test_item_mark_complete,
    test_item_unmark_complete,
    test_item_edit,
    test_editing_hides_other_controls,
    test_editing_saves_on_blur,
    test_editing_trims_text,
    test_editing_empty_text_removes_item,
    test_editing_cancels_on_escape,
    test_counter_shows_number_of_items,
    test_clear_completed_shows_text,
    test_clear_completed_removes_items,
    test_clear_completed_hidden_without_completed,
    test_persistence,
    test_routing_active_items,
    test_routing_back_button,
    test_routing_completed_items,
    test_routing_all_items,
    test_routing_highlights_filter,
]


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error


def run_suite(app_url: str, chromium_path: str = DEFAULT_CHROMIUM) -> list[Outcome]:
    """Every test in order: one browser, a new context and page per test."""
    outcomes: list[Outcome] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True)
        try:
            for test in TESTS:
                started = time.perf_counter()
                context = browser.new_context()
                try:
                    page = context.new_page()
                    page.goto(app_url)
                    test(page)
                    error = ""
                except Exception as exc:  # the outcome says which check failed
                    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                finally:
                    context.close()
                outcomes.append(Outcome(test.__name__, time.perf_counter() - started, error))
        finally:
            browser.close()
    return outcomes


if __name__ == "__main__":
    from tests.acceptance.app_server import serve_app

    with serve_app() as url:
        started = time.perf_counter()
        results = run_suite(url)
        total = time.perf_counter() - started
    for outcome in results:
        print(f"{'ok  ' if outcome.passed else 'FAIL'} {outcome.name:45} {outcome.seconds:6.2f}s {outcome.error}")
    print(f"{sum(o.passed for o in results)} passed, {sum(not o.passed for o in results)} failed "
          f"in {total:.2f}s")
