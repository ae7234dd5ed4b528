"""The step actions of a browser task, by the name of their `oneof` field, and what
is known about a step before it runs (its name, timeout and selectors)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from google.protobuf.message import Message

from conveyor.v1 import task_pb2
from executor.browser import actions, capture, waits
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
    "expect": waits.expect_step,
    "extract": capture.extract,
    "screenshot": capture.screenshot,
    "upload": actions.upload,
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
    if "target" in message.DESCRIPTOR.fields_by_name and message.HasField("target"):
        target: object = message.target  # type: ignore[attr-defined]
        assert isinstance(target, task_pb2.Target)
        return target
    return None


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
        detail = target.selector
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
        target = target_of(getattr(step, action))
        if target is not None:
            for selector in (target.selector, *target.fallbacks):
                if selector.strip():
                    seen.setdefault(selector, None)
    return list(seen)
