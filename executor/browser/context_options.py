"""A task's context options (BrowserTask.context): what is given to
browser.new_context (viewport, device, user agent, locale, time zone, color scheme,
reduced motion; downloads when a step needs them), and what is set on the context
before the first step (extra HTTP headers, cookies)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2
from playwright.async_api import BrowserContext

from conveyor.browser_steps import DEFAULT_TEST_ID_ATTRIBUTE, devices
from conveyor.kinds.errors import JobError
from conveyor.v1 import task_pb2

_DEVICE_KEYS = ("user_agent", "viewport", "screen", "device_scale_factor", "is_mobile", "has_touch")


def new_context_options(task: task_pb2.BrowserTask) -> dict[str, Any]:
    """Keyword arguments of browser.new_context for the task (empty: none needed)."""
    options: dict[str, Any] = {}
    c = task.context
    if c.device:
        descriptor = devices().get(c.device)
        if descriptor is None:
            raise JobError(f"browser.context.device: unknown device {c.device!r} (see conveyor/browser_devices.json)",
                           code=code_pb2.INVALID_ARGUMENT, reason="INVALID_TASK", retryable=False)
        options.update({k: descriptor[k] for k in _DEVICE_KEYS if k in descriptor})
    if c.HasField("viewport"):
        options["viewport"] = {"width": c.viewport.width, "height": c.viewport.height}
    if c.user_agent:
        options["user_agent"] = c.user_agent
    if c.locale:
        options["locale"] = c.locale
    if c.timezone_id:
        options["timezone_id"] = c.timezone_id
    if c.color_scheme:
        options["color_scheme"] = c.color_scheme
    if c.reduced_motion:
        options["reduced_motion"] = c.reduced_motion
    if any(step.WhichOneof("action") == "download" for step in task.steps):
        options["accept_downloads"] = True
    return options


def test_id_attribute(task: task_pb2.BrowserTask) -> str:
    return task.context.test_id_attribute or DEFAULT_TEST_ID_ATTRIBUTE


async def apply(context: BrowserContext, task: task_pb2.BrowserTask) -> None:
    """What is set on the context itself before the first step."""
    c = task.context
    if c.extra_http_headers:
        await context.set_extra_http_headers(dict(c.extra_http_headers))
    if c.cookies:
        cookies: list[Any] = []
        for cookie in c.cookies:
            given = json_format.MessageToDict(cookie, preserving_proto_field_name=True)
            entry: dict[str, Any] = {"name": cookie.name, "value": cookie.value}
            for key, name in (("url", "url"), ("domain", "domain"), ("path", "path"),
                              ("http_only", "httpOnly"), ("secure", "secure"), ("same_site", "sameSite")):
                if key in given:
                    entry[name] = given[key]
            if cookie.expires:
                entry["expires"] = float(cookie.expires)
            cookies.append(entry)
        await context.add_cookies(cookies)
