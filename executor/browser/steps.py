"""The step actions of a browser task, by the name of their `oneof` field (the
catalog, conveyor/browser_steps.py, lists the same names), and what is known about a
step before it runs (its name, timeout and selectors)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from google.protobuf.message import Message

from conveyor.v1 import task_pb2
from executor.browser import actions, assertions, capture, locators, page_control, waits
from executor.browser.step_errors import invalid_step
from executor.browser.timing import seconds_of

Handler = Callable[[Any, Any], Coroutine[Any, Any, None]]

ACTIONS: dict[str, Handler] = {
    "navigate": actions.navigate,
    "click": actions.click,
    "fill": actions.fill,
    "type": actions.type_text,
    "clear": actions.clear,
    "press": actions.press,
    "hover": actions.hover,
    "select": actions.select,
    "check": actions.check,
    "uncheck": actions.uncheck,
    "scroll": actions.scroll,
    "wait": waits.wait,
    "expect": assertions.expect_step,
    "extract": capture.extract,
    "screenshot": capture.screenshot,
    "upload": actions.upload,
    "evaluate": page_control.evaluate,
    "wait_for_function": page_control.wait_for_function,
    "go_back": page_control.go_back,
    "go_forward": page_control.go_forward,
    "reload": page_control.reload,
    "focus": page_control.focus,
    "blur": page_control.blur,
    "dispatch_event": page_control.dispatch_event,
    "drag": page_control.drag,
    "keyboard": page_control.keyboard,
    "mouse": page_control.mouse,
    "dialog": page_control.dialog,
    "switch_page": page_control.switch_page,
    "download": page_control.download,
}
# Extra time a `wait` for a duration gets beyond the duration itself.
DURATION_WAIT_GRACE_SECONDS = 1.0
MAX_NAME_CHARS = 120


def action_of(step: task_pb2.Step) -> tuple[str, Message]:
    name = step.WhichOneof("action")
    if name is None:
        raise invalid_step("the step has no action")
    return name, getattr(step, name)


def target_of(message: Message) -> task_pb2.Target | None:
    """What the step acts on (a drag's source)."""
    found = targets_of(message)
    return found[0] if found else None


def targets_of(message: Message) -> list[task_pb2.Target]:
    """Every target of a step, in order (a drag has a source and a target)."""
    found: list[task_pb2.Target] = []
    for name in ("source", "target"):
        if name in message.DESCRIPTOR.fields_by_name and message.HasField(name):
            target: object = getattr(message, name)
            assert isinstance(target, task_pb2.Target)
            found.append(target)
    return found


def target_text(target: task_pb2.Target, test_id_attribute: str = "data-testid") -> str:
    if target.HasField("locator"):
        return locators.describe(target.locator, test_id_attribute)
    return target.selector


def display_name(step: task_pb2.Step) -> str:
    """The step's name, or one made from its action and what it acts on."""
    if step.name:
        return step.name[:MAX_NAME_CHARS]
    action = step.WhichOneof("action") or "step"
    message = getattr(step, action) if action != "step" else None
    detail = ""
    if isinstance(message, task_pb2.NavigateAction):
        detail = message.url
    elif message is not None and (target := target_of(message)) is not None:
        detail = target_text(target)
    return f"{action} {detail}".strip()[:MAX_NAME_CHARS]


def timeout_seconds(step: task_pb2.Step, default_seconds: float) -> float:
    seconds = seconds_of(step.timeout) if step.HasField("timeout") else 0.0
    if seconds <= 0:
        seconds = default_seconds
    if step.WhichOneof("action") == "wait":
        duration = waits.wait_duration_seconds(step.wait)
        if duration is not None:
            seconds = max(seconds, duration + DURATION_WAIT_GRACE_SECONDS)
    return seconds


def selectors_of(steps: list[task_pb2.Step]) -> list[str]:
    """Every selector the task names, once each, in order."""
    seen: dict[str, None] = {}
    for step in steps:
        action = step.WhichOneof("action")
        if action is None:
            continue
        for target in targets_of(getattr(step, action)):
            for selector in selectors_of_target(target):
                seen.setdefault(selector, None)
    return list(seen)


def selectors_of_target(target: task_pb2.Target) -> list[str]:
    """The selector strings of a target: its selector and fallbacks, or the CSS and
    XPath inside its locator."""
    if target.HasField("locator"):
        return locators.selectors_in(target.locator)
    return [s for s in (target.selector, *target.fallbacks) if s.strip()]
