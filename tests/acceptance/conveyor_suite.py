"""The acceptance suite as Conveyor browser jobs: playwright_suite.py translated test
for test and check for check, in the protobuf JSON form of task.proto.

`suite(app_url)` gives the 24 jobs' `SubmitJobRequest` bodies, in the order of
playwright_suite.TESTS, each starting with a navigation to the app (the demo's
`beforeEach`). Every check of the Playwright file is one named step here, with the
same locator and the same expectation:

    expect(loc).to_have_text([...])        -> expect {text {values}}
    expect(loc).to_have_class("completed") -> expect {class {value}}
    expect(loc).not_to_be_checked()        -> expect {checked, not}
    page.wait_for_function(f"e => {x} === e", arg=e)
                                           -> evaluate {expression: "() => x", expected: e}

(the Playwright suite's localStorage checks wait for `x === e`; `evaluate` with
`expected` polls `x` until it equals `e`, up to the step timeout: the same check,
and one a soft step can make, which waitForFunction is not).

`mutated(job)` is the same job with every check changed so that it must fail (an
expected text, class or stored title altered, a count or stored number off by one,
a boolean check negated, a negated check no longer negated), each made soft (the
job goes on and fails at the end, naming every failed check) with a short timeout;
`checks(job)` names the checks of a job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.acceptance.playwright_suite import NEW_TODO, STORE, TODO_ITEMS

Json = dict[str, Any]
ITEMS = "#todo-list li"
TITLES = "#todo-list li label"
COUNT = "#todo-count"
#: How long a mutated (failing) check waits before it gives up.
MUTATED_CHECK_TIMEOUT = "0.5s"

# --- locators, as Playwright builds them ---------------------------------------------------


def css(selector: str, **more: Any) -> Json:
    return {"css": selector, **more}


def placeholder(text: str) -> Json:
    return {"placeholder": text}


def label(text: str) -> Json:
    return {"label": text}


def role(name_of_role: str, name: str = "", within: Json | None = None) -> Json:
    loc: Json = {"role": name_of_role}
    if name:
        loc["name"] = name
    if within is not None:
        loc["within"] = within
    return loc


def item(n: int) -> Json:
    """page.locator('#todo-list li').nth(n)"""
    return css(ITEMS, nth=n)


NEW = placeholder(NEW_TODO)
TOGGLE_ALL = label("Mark all as complete")


@dataclass
class Job:
    """One test: its name and steps."""

    name: str
    steps: list[Json] = field(default_factory=list)
    _counter: dict[str, int] = field(default_factory=dict)

    def _named(self, kind: str, what: str) -> str:
        number = self._counter.get(kind, 0) + 1
        self._counter[kind] = number
        return f"{kind} {number}: {what}"

    def act(self, action: str, what: str, **body: Any) -> Job:
        self.steps.append({"name": self._named("step", what), action: body})
        return self

    def fill(self, loc: Json, text: str) -> Job:
        return self.act("fill", f"fill {text!r}", target={"locator": loc}, text=text)

    def press(self, loc: Json, key: str) -> Job:
        return self.act("press", f"press {key}", target={"locator": loc}, key=key)

    def check(self, loc: Json) -> Job:
        return self.act("check", "check", target={"locator": loc})

    def uncheck(self, loc: Json) -> Job:
        return self.act("uncheck", "uncheck", target={"locator": loc})

    def click(self, loc: Json, what: str = "click") -> Job:
        return self.act("click", what, target={"locator": loc})

    def dblclick(self, loc: Json) -> Job:
        return self.act("click", "double-click", target={"locator": loc}, clickCount=2)

    def expect(self, loc: Json | None, what: str, **condition: Any) -> Job:
        body: Json = dict(condition)
        if loc is not None:
            body["target"] = {"locator": loc}
        self.steps.append({"name": self._named("check", what), "expect": body})
        return self

    def evaluate(self, expression: str, expected: Any, what: str, arg: Any = None) -> Job:
        body: Json = {"expression": expression, "expected": expected}
        if arg is not None:
            body["arg"] = arg
        self.steps.append({"name": self._named("check", what), "evaluate": body})
        return self

    # --- the demo's helpers ----------------------------------------------------------------

    def add_todos(self, items: list[str]) -> Job:
        for text in items:
            self.fill(NEW, text).press(NEW, "Enter")
        return self

    def stored_count(self, expected: int) -> Job:
        return self.evaluate(
            f"() => JSON.parse(localStorage['{STORE}']).todos.length", expected,
            f"{expected} todos stored",
        )

    def stored_completed(self, expected: int) -> Job:
        return self.evaluate(
            f"() => JSON.parse(localStorage['{STORE}']).todos.filter(t => t.completed).length",
            expected, f"{expected} completed todos stored",
        )

    def stored_title(self, title: str) -> Job:
        return self.evaluate(
            f"t => JSON.parse(localStorage['{STORE}']).todos.map(t => t.title).includes(t)", True,
            f"{title!r} stored", arg=title,
        )

    def titles(self, expected: list[str]) -> Job:
        return self.expect(css(TITLES), f"titles {expected}", text={"values": expected})

    def items_count(self, expected: int) -> Job:
        return self.expect(css(ITEMS), f"{expected} items", count=expected)

    def request(self, app_url: str) -> Json:
        return {
            "browser": {"steps": [{"name": "open the app", "navigate": {"url": app_url}}, *self.steps]},
            "labels": {"test": self.name},
        }


# --- the tests, in playwright_suite.TESTS order ----------------------------------------------------


def new_todo_add_items(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:1]).titles(TODO_ITEMS[:1])
    j.add_todos(TODO_ITEMS[1:2]).titles(TODO_ITEMS[:2])
    j.stored_count(2)


def new_todo_clears_input(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:1]).expect(NEW, "the input is empty", empty=True)
    j.stored_count(1)


def new_todo_appends_to_bottom(j: Job) -> None:
    j.add_todos(TODO_ITEMS)
    j.expect({"text": "3 items left"}, "'3 items left' visible", visible=True)
    j.expect(css(COUNT), "count has text", text={"value": "3 items left"})
    j.expect(css(COUNT), "count contains 3", text={"value": "3", "contains": True})
    j.expect(css(COUNT), "count matches /3/", text={"value": "3", "regex": True})
    j.titles(TODO_ITEMS)
    j.stored_count(3)


def _mark_all_before(j: Job) -> None:
    j.add_todos(TODO_ITEMS).stored_count(3)


def mark_all_completed(j: Job) -> None:
    _mark_all_before(j)
    j.check(TOGGLE_ALL)
    j.expect(css(ITEMS), "all completed", **{"class": {"values": ["completed"] * 3}})
    j.stored_completed(3)
    j.stored_count(3)


def mark_all_clear_complete_state(j: Job) -> None:
    _mark_all_before(j)
    j.check(TOGGLE_ALL).uncheck(TOGGLE_ALL)
    j.expect(css(ITEMS), "none completed", **{"class": {"values": [""] * 3}})
    j.stored_count(3)


def mark_all_checkbox_follows_items(j: Job) -> None:
    _mark_all_before(j)
    j.check(TOGGLE_ALL)
    j.expect(TOGGLE_ALL, "toggle-all checked", checked=True)
    j.stored_completed(3)
    j.uncheck(role("checkbox", within=item(0)))
    j.expect(TOGGLE_ALL, "toggle-all not checked", checked=True, **{"not": True})
    j.check(role("checkbox", within=item(0)))
    j.stored_completed(3)
    j.expect(TOGGLE_ALL, "toggle-all checked again", checked=True)
    j.stored_count(3)


def item_mark_complete(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:2])
    j.check(role("checkbox", within=item(0)))
    j.expect(item(0), "first completed", **{"class": {"value": "completed"}})
    j.expect(item(1), "second not completed", **{"class": {"value": "completed"}, "not": True})
    j.check(role("checkbox", within=item(1)))
    j.expect(item(0), "first still completed", **{"class": {"value": "completed"}})
    j.expect(item(1), "second completed", **{"class": {"value": "completed"}})


def item_unmark_complete(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:2])
    j.check(role("checkbox", within=item(0)))
    j.expect(item(0), "first completed", **{"class": {"value": "completed"}})
    j.expect(item(1), "second not completed", **{"class": {"value": "completed"}, "not": True})
    j.stored_completed(1)
    j.uncheck(role("checkbox", within=item(0)))
    j.expect(item(0), "first not completed", **{"class": {"value": "completed"}, "not": True})
    j.expect(item(1), "second still not completed", **{"class": {"value": "completed"}, "not": True})
    j.stored_completed(0)


def item_edit(j: Job) -> None:
    j.add_todos(TODO_ITEMS)
    j.dblclick(item(1))
    edit = css(".edit", within=item(1))
    j.expect(edit, "edit box holds the title", inputValue={"value": TODO_ITEMS[1]})
    j.fill(edit, "buy some sausages").press(edit, "Enter")
    j.titles([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    j.stored_title("buy some sausages")


def _editing_before(j: Job) -> None:
    j.add_todos(TODO_ITEMS).stored_count(3)


def editing_hides_other_controls(j: Job) -> None:
    _editing_before(j)
    j.dblclick(item(1))
    j.expect(role("checkbox", within=item(1)), "checkbox not visible", visible=True, **{"not": True})
    j.expect(css("label", filters=[{"hasText": TODO_ITEMS[1]}], within=item(1)), "label not visible",
             visible=True, **{"not": True})
    j.stored_count(3)


def editing_saves_on_blur(j: Job) -> None:
    _editing_before(j)
    j.dblclick(item(1))
    edit = css(".edit", within=item(1))
    j.fill(edit, "buy some sausages")
    j.act("dispatchEvent", "dispatch blur", target={"locator": edit}, type="blur")
    j.titles([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    j.stored_title("buy some sausages")


def editing_trims_text(j: Job) -> None:
    _editing_before(j)
    j.dblclick(item(1))
    edit = css(".edit", within=item(1))
    j.fill(edit, "    buy some sausages    ").press(edit, "Enter")
    j.titles([TODO_ITEMS[0], "buy some sausages", TODO_ITEMS[2]])
    j.evaluate(
        f"t => JSON.parse(localStorage['{STORE}']).todos.map(t => t.title.trim()).includes(t)",
        True, "'buy some sausages' stored (trimmed)", arg="buy some sausages",
    )


def editing_empty_text_removes_item(j: Job) -> None:
    _editing_before(j)
    j.dblclick(item(1))
    edit = css(".edit", within=item(1))
    j.fill(edit, "").press(edit, "Enter")
    j.titles([TODO_ITEMS[0], TODO_ITEMS[2]])
    j.stored_count(2)


def editing_cancels_on_escape(j: Job) -> None:
    _editing_before(j)
    j.dblclick(item(1))
    edit = css(".edit", within=item(1))
    j.fill(edit, "buy some sausages").press(edit, "Escape")
    j.titles(TODO_ITEMS)
    j.stored_title(TODO_ITEMS[1])


def counter_shows_number_of_items(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:1])
    j.expect(css(COUNT), "count contains 1", text={"value": "1", "contains": True})
    j.add_todos(TODO_ITEMS[1:2])
    j.expect(css(COUNT), "count contains 2", text={"value": "2", "contains": True})
    j.stored_count(2)


CLEAR = role("button", "Clear completed")


def clear_completed_shows_text(j: Job) -> None:
    j.add_todos(TODO_ITEMS)
    j.check(css(".toggle", first=True))
    j.expect(CLEAR, "clear button visible", visible=True)


def clear_completed_removes_items(j: Job) -> None:
    j.add_todos(TODO_ITEMS)
    j.check(role("checkbox", within=item(1)))
    j.click(CLEAR, "click Clear completed")
    j.items_count(2)
    j.titles([TODO_ITEMS[0], TODO_ITEMS[2]])


def clear_completed_hidden_without_completed(j: Job) -> None:
    j.add_todos(TODO_ITEMS)
    j.check(css(".toggle", first=True))
    j.click(CLEAR, "click Clear completed")
    j.expect(CLEAR, "clear button hidden", hidden=True)


def persistence(j: Job) -> None:
    j.add_todos(TODO_ITEMS[:2])
    first_checkbox = role("checkbox", within=item(0))
    j.check(first_checkbox)
    for when in ("", " after reload"):
        if when:
            j.act("reload", "reload")
        j.titles(TODO_ITEMS[:2])
        j.expect(first_checkbox, "first checked" + when, checked=True)
        j.expect(css(ITEMS), "classes" + when, **{"class": {"values": ["completed", ""]}})
        if not when:
            j.stored_completed(1)


def _routing_before(j: Job) -> None:
    j.add_todos(TODO_ITEMS).stored_title(TODO_ITEMS[0])


def link(name: str) -> Json:
    return role("link", name)


def routing_active_items(j: Job) -> None:
    _routing_before(j)
    j.check(role("checkbox", within=item(1))).stored_completed(1)
    j.click(link("Active"), "click Active")
    j.items_count(2)
    j.titles([TODO_ITEMS[0], TODO_ITEMS[2]])


def routing_back_button(j: Job) -> None:
    _routing_before(j)
    j.check(role("checkbox", within=item(1))).stored_completed(1)
    j.click(link("All"), "click All").items_count(3)
    j.click(link("Active"), "click Active")
    j.click(link("Completed"), "click Completed").items_count(1)
    j.act("goBack", "go back").items_count(2)
    j.act("goBack", "go back again").items_count(3)


def routing_completed_items(j: Job) -> None:
    _routing_before(j)
    j.check(role("checkbox", within=item(1))).stored_completed(1)
    j.click(link("Completed"), "click Completed").items_count(1)


def routing_all_items(j: Job) -> None:
    _routing_before(j)
    j.check(role("checkbox", within=item(1))).stored_completed(1)
    j.click(link("Active"), "click Active")
    j.click(link("Completed"), "click Completed")
    j.click(link("All"), "click All").items_count(3)


def routing_highlights_filter(j: Job) -> None:
    _routing_before(j)
    j.expect(link("All"), "All selected", **{"class": {"value": "selected"}})
    j.click(link("Active"), "click Active")
    j.expect(link("Active"), "Active selected", **{"class": {"value": "selected"}})
    j.click(link("Completed"), "click Completed")
    j.expect(link("Completed"), "Completed selected", **{"class": {"value": "selected"}})


TESTS: list[Callable[[Job], None]] = [
    new_todo_add_items,
    new_todo_clears_input,
    new_todo_appends_to_bottom,
    mark_all_completed,
    mark_all_clear_complete_state,
    mark_all_checkbox_follows_items,
    item_mark_complete,
    item_unmark_complete,
    item_edit,
    editing_hides_other_controls,
    editing_saves_on_blur,
    editing_trims_text,
    editing_empty_text_removes_item,
    editing_cancels_on_escape,
    counter_shows_number_of_items,
    clear_completed_shows_text,
    clear_completed_removes_items,
    clear_completed_hidden_without_completed,
    persistence,
    routing_active_items,
    routing_back_button,
    routing_completed_items,
    routing_all_items,
    routing_highlights_filter,
]


def suite(app_url: str) -> list[Json]:
    """The 24 jobs' SubmitJobRequest bodies (protobuf JSON), in TESTS order."""
    jobs = []
    for test in TESTS:
        job = Job("test_" + test.__name__)
        test(job)
        jobs.append(job.request(app_url))
    return jobs


def is_check(step: Json) -> bool:
    return "expect" in step or "evaluate" in step


def checks(request: Json) -> list[str]:
    """The names of the job's checks, in order."""
    return [s["name"] for s in request["browser"]["steps"] if is_check(s)]


def _mutate_check(step: Json) -> None:
    if "evaluate" in step:
        body = step["evaluate"]
        if "arg" in body:  # a title that must be stored: another one
            body["arg"] = f"{body['arg']} (mutated)"
        else:  # a number stored: one more
            body["expected"] += 1
        return
    body = step["expect"]
    if body.get("not"):  # a negated check: the check itself
        del body["not"]
    elif "text" in body:
        text = body["text"]
        if "values" in text:
            text["values"] = [*text["values"][:-1], text["values"][-1] + " (mutated)"]
        else:
            text["value"] = "9" if text["value"] in ("1", "2", "3") else text["value"] + " (mutated)"
    elif "class" in body:
        klass = body["class"]
        if "values" in klass:
            klass["values"] = [*klass["values"][:-1], "editing"]
        else:
            klass["value"] = "editing"
    elif "count" in body:
        # A count no view of the app shows on the way: a count one more could be the
        # list of the view just left, still on the page when the check starts (after
        # "click Completed" in the Active view's 2 items, a check of 2 passed at once).
        body["count"] += 10
    elif "inputValue" in body:
        body["inputValue"]["value"] += " (mutated)"
    else:  # a boolean check (visible, hidden, checked, empty): the opposite
        body["not"] = not body.get("not", False)


def mutated(request: Json) -> Json:
    """The job with every check mutated to fail, soft (all are reported), each
    failing within MUTATED_CHECK_TIMEOUT."""
    copy_ = copy.deepcopy(request)
    for step in copy_["browser"]["steps"]:
        if is_check(step):
            _mutate_check(step)
            step["soft"] = True
            step["timeout"] = MUTATED_CHECK_TIMEOUT
    copy_["labels"] = {**copy_.get("labels", {}), "mutated": "yes"}
    return copy_
