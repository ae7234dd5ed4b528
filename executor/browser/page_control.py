"""Steps that read and drive the page beyond one element: evaluate, waitForFunction,
history (goBack, goForward, reload), focus, blur, dispatchEvent, drag, the keyboard
and mouse without a target, dialogs, popups and new tabs (switchPage), downloads.

`JobPages` is the job's state across steps: its pages in the order they opened, the
one steps act on, how dialogs are answered, the dialogs' messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import mimetypes
import re
from collections.abc import Callable
from typing import Literal, cast

import structlog
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2
from playwright.async_api import BrowserContext, Dialog, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from conveyor.browser_steps import MAX_RESULT_BYTES, WAIT_UNTIL
from conveyor.v1 import task_pb2
from executor.browser.request_guard import RequestGuard
from executor.browser.step_context import StepContext
from executor.browser.step_errors import StepFailure, expectation_failed, invalid_step, step_timeout
from executor.browser.targets import act, act_on, for_action
from executor.browser.timing import seconds_of

log = structlog.get_logger()

WaitUntil = Literal["commit", "domcontentloaded", "load", "networkidle"]
MouseButton = Literal["left", "middle", "right"]
# expect.poll's intervals, as Playwright's: then every second.
POLL_INTERVALS_S = (0.1, 0.25, 0.5, 1.0)
MAX_SHOWN = 200
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class JobPages:
    """The pages of one job's context, and the one its steps act on."""

    def __init__(self, context: BrowserContext, first: Page, guard: RequestGuard) -> None:
        self.context = context
        self.guard = guard
        self.pages: list[Page] = []
        self.current = first
        self._switched_to = 1  # pages[:n] were switched to or seen as current
        self._opened = asyncio.Event()
        self.dialog_action = "dismiss"
        self.prompt_text = ""
        self.dialog_key = ""
        self.dialog_messages: list[str] = []
        self.on_value: Callable[[str, str], None] | None = None
        self._add(first)
        context.on("page", self._add)

    def _add(self, page: Page) -> None:
        if page in self.pages:
            return
        self.pages.append(page)
        page.on("dialog", self._on_dialog)
        self._opened.set()

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialog_messages.append(dialog.message)
        if self.dialog_key and self.on_value is not None:
            self.on_value(self.dialog_key, dialog.message)
        with contextlib.suppress(PlaywrightError):
            if self.dialog_action == "accept":
                if dialog.type == "prompt":
                    await dialog.accept(self.prompt_text)
                else:
                    await dialog.accept()
            else:
                await dialog.dismiss()

    def switch(self, page: Page) -> None:
        self.current = page
        self.guard.watch_page(page)
        index = self.pages.index(page)
        self._switched_to = max(self._switched_to, index + 1)

    async def newest(self, timeout_s: float) -> Page:
        """The newest page not switched to yet, waiting for one to open."""
        async with asyncio.timeout(timeout_s):
            while True:
                open_pages = [p for p in self.pages[self._switched_to:] if not p.is_closed()]
                if open_pages:
                    return open_pages[-1]
                self._opened.clear()
                await self._opened.wait()

    async def matching(self, needle: str, timeout_s: float) -> Page:
        async with asyncio.timeout(timeout_s):
            while True:
                for page in self.pages:
                    if not page.is_closed() and needle in page.url:
                        return page
                self._opened.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):  # URLs change without a new page
                        await self._opened.wait()


def _pages(ctx: StepContext) -> JobPages:
    if ctx.pages is None:
        raise invalid_step(f"{ctx.action} needs the job's pages")
    return ctx.pages


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _plain(value: struct_pb2.Value) -> object:
    """A JSON value as Python; whole numbers as ints (JSON has one number type)."""
    return _whole(json_format.MessageToDict(value))


def _whole(value: object) -> object:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _json_safe(value: object) -> object:
    """What evaluate returned, as JSON: dates and other non-JSON values as strings,
    NaN and infinities as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _to_value(value: object) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(value, out)  # type: ignore[arg-type]  # any JSON value
    return out


async def evaluate(ctx: StepContext, action: task_pb2.EvaluateAction) -> None:
    if not action.expression.strip():
        raise invalid_step("evaluate needs an expression")
    arg = _plain(action.arg) if action.HasField("arg") else None
    target = await for_action(ctx, action.target) if action.HasField("target") else None

    async def run() -> object:
        if target is not None:
            return _json_safe(await act_on(ctx, target, lambda e: e.evaluate(
                action.expression, arg, timeout=ctx.deadline.remaining_ms())))
        return _json_safe(await ctx.page.evaluate(action.expression, arg))

    result = await run()
    if action.HasField("expected"):
        expected = _plain(action.expected)
        intervals = iter(POLL_INTERVALS_S)
        while result != expected:
            pause = next(intervals, POLL_INTERVALS_S[-1])
            if ctx.deadline.remaining() <= pause:
                raise expectation_failed(f"{action.expression[:80]!r} to return {_shown(expected)}", _shown(result))
            await asyncio.sleep(pause)
            result = await run()
    if action.key:
        size = len(json.dumps(result, ensure_ascii=False))
        if size > MAX_RESULT_BYTES:
            raise StepFailure(
                "RESULT_TOO_LARGE",
                f"the result is {size} bytes of JSON; at most {MAX_RESULT_BYTES}",
                code=code_pb2.RESOURCE_EXHAUSTED, retryable=False,
            )
        ctx.outputs.set_json(action.key, _to_value(result))


async def wait_for_function(ctx: StepContext, action: task_pb2.WaitForFunctionAction) -> None:
    if not action.expression.strip():
        raise invalid_step("waitForFunction needs an expression")
    arg = _plain(action.arg) if action.HasField("arg") else None
    polling: float | Literal["raf"] = (
        seconds_of(action.polling) * 1000 if action.HasField("polling") else "raf"
    )
    try:
        await ctx.page.wait_for_function(
            action.expression, arg=arg, polling=polling, timeout=ctx.deadline.remaining_ms()
        )
    except PlaywrightTimeoutError:
        raise step_timeout(
            ctx.deadline.total, f"{action.expression[:120]!r} did not become truthy"
        ) from None


def _wait_until(action: task_pb2.HistoryAction) -> WaitUntil:
    wait_until = action.wait_until or "load"
    if wait_until not in WAIT_UNTIL:
        raise invalid_step(f"waitUntil must be one of {', '.join(WAIT_UNTIL)}, not {wait_until!r}")
    return cast(WaitUntil, wait_until)


def _no_history(direction: str) -> StepFailure:
    return StepFailure(
        "NO_HISTORY", f"there is no page to go {direction} to",
        code=code_pb2.FAILED_PRECONDITION, retryable=False,
    )


async def go_back(ctx: StepContext, action: task_pb2.HistoryAction) -> None:
    before = ctx.page.url
    response = await ctx.page.go_back(wait_until=_wait_until(action), timeout=ctx.deadline.remaining_ms())
    # No response: no history entry -- or a same-document (hash) move, which changes the URL.
    if response is None and ctx.page.url == before:
        raise _no_history("back")


async def go_forward(ctx: StepContext, action: task_pb2.HistoryAction) -> None:
    before = ctx.page.url
    response = await ctx.page.go_forward(wait_until=_wait_until(action), timeout=ctx.deadline.remaining_ms())
    if response is None and ctx.page.url == before:
        raise _no_history("forward")


async def reload(ctx: StepContext, action: task_pb2.HistoryAction) -> None:
    await ctx.page.reload(wait_until=_wait_until(action), timeout=ctx.deadline.remaining_ms())


async def focus(ctx: StepContext, action: task_pb2.FocusAction) -> None:
    await act(ctx, action.target, lambda e: e.focus(timeout=ctx.deadline.remaining_ms()))


async def blur(ctx: StepContext, action: task_pb2.BlurAction) -> None:
    await act(ctx, action.target, lambda e: e.blur(timeout=ctx.deadline.remaining_ms()))


async def dispatch_event(ctx: StepContext, action: task_pb2.DispatchEventAction) -> None:
    if not action.type:
        raise invalid_step("dispatchEvent needs a type")
    init = json_format.MessageToDict(action.event_init) if action.HasField("event_init") else None
    await act(ctx, action.target, lambda e: e.dispatch_event(action.type, init, timeout=ctx.deadline.remaining_ms()))


async def drag(ctx: StepContext, action: task_pb2.DragAction) -> None:
    if not action.HasField("source") or not action.HasField("target"):
        raise invalid_step("drag needs a source and a target")
    source = await ctx.target(action.source)
    dest = await ctx.target(action.target)
    ctx.selector = source.selector
    ctx.matched_selector = f"{source.selector} -> {dest.selector}"
    await source.first.drag_to(dest.first, timeout=ctx.deadline.remaining_ms())


async def keyboard(ctx: StepContext, action: task_pb2.KeyboardAction) -> None:
    op = action.WhichOneof("op")
    delay = seconds_of(action.delay) * 1000 if action.HasField("delay") else 0.0
    keys = ctx.page.keyboard
    if op == "press":
        await keys.press(action.press, delay=delay)
    elif op == "type":
        await keys.type(action.type, delay=delay)
    elif op == "down":
        await keys.down(action.down)
    elif op == "up":
        await keys.up(action.up)
    elif op == "insert_text":
        await keys.insert_text(action.insert_text)
    else:
        raise invalid_step("keyboard needs one of press, type, down, up, insertText")


def _button(name: str) -> MouseButton:
    return cast(MouseButton, name or "left")


async def mouse(ctx: StepContext, action: task_pb2.MouseAction) -> None:
    op = action.WhichOneof("op")
    m = ctx.page.mouse
    if op == "move":
        await m.move(action.move.x, action.move.y, steps=action.move.steps or 1)
    elif op == "click":
        c = action.click
        await m.click(c.x, c.y, button=_button(c.button), click_count=c.click_count or 1)
    elif op == "down":
        await m.down(button=_button(action.down.button))
    elif op == "up":
        await m.up(button=_button(action.up.button))
    elif op == "wheel":
        await m.wheel(action.wheel.dx, action.wheel.dy)
    else:
        raise invalid_step("mouse needs one of move, click, down, up, wheel")


async def dialog(ctx: StepContext, action: task_pb2.DialogAction) -> None:
    pages = _pages(ctx)
    pages.dialog_action = action.action or "accept"
    pages.prompt_text = action.prompt_text
    pages.dialog_key = action.key
    pages.on_value = ctx.outputs.set_value


async def switch_page(ctx: StepContext, action: task_pb2.SwitchPageAction) -> None:
    pages = _pages(ctx)
    to = action.WhichOneof("to")
    before = pages.current
    try:
        if to == "new":
            page = await pages.newest(ctx.deadline.remaining())
        elif to == "index":
            live = pages.pages
            if not 0 <= action.index < len(live) or live[action.index].is_closed():
                raise StepFailure(
                    "PAGE_NOT_FOUND", f"no open page at index {action.index} ({len(live)} opened)",
                    code=code_pb2.NOT_FOUND, retryable=False,
                )
            page = live[action.index]
        elif to == "url_contains":
            page = await pages.matching(action.url_contains, ctx.deadline.remaining())
        else:
            raise invalid_step("switchPage needs new, index or urlContains")
    except TimeoutError:
        what = "a new page to open" if to == "new" else f"a page whose URL contains {action.url_contains!r}"
        raise step_timeout(ctx.deadline.total, f"waited for {what}") from None
    with contextlib.suppress(PlaywrightError, PlaywrightTimeoutError):
        await page.wait_for_load_state("domcontentloaded", timeout=ctx.deadline.remaining_ms())
    pages.switch(page)
    ctx.page = page
    ctx.matched_selector = page.url
    if action.close_current and before is not page:
        await before.close()


def download_name(step_index: int, suggested: str) -> str:
    """The artifact name of a download: made from the step's index, with the page's
    suggested file name reduced to safe characters."""
    safe = _SAFE_NAME.sub("_", suggested).strip("._-")[:100] or "file"
    return f"step-{step_index:02d}-download-{safe}"


async def download(ctx: StepContext, action: task_pb2.DownloadAction) -> None:
    found = await for_action(ctx, action.target)
    async with ctx.page.expect_download(timeout=ctx.deadline.remaining_ms()) as info:
        await act_on(ctx, found, lambda e: e.click(timeout=ctx.deadline.remaining_ms()))
    dl = await info.value
    try:
        path = await dl.path()
        size = path.stat().st_size
        budget = ctx.outputs.max_artifact_bytes - ctx.outputs.artifact_bytes
        name = download_name(ctx.index, dl.suggested_filename)
        if size > budget:
            raise StepFailure(
                "ARTIFACT_TOO_LARGE",
                f"the download {dl.suggested_filename!r} ({size} bytes) would take the job's artifacts "
                f"past the limit of {ctx.outputs.max_artifact_bytes} bytes",
                code=code_pb2.RESOURCE_EXHAUSTED, retryable=False,
                metadata={"artifact": name, "size_bytes": str(size)},
            )
        data = await asyncio.to_thread(path.read_bytes)
        content_type = mimetypes.guess_type(dl.suggested_filename)[0] or "application/octet-stream"
        await ctx.outputs.add_artifact(ctx.index, name, data, content_type)
        ctx.matched_selector = found.selector
    finally:
        with contextlib.suppress(PlaywrightError):
            await dl.delete()
