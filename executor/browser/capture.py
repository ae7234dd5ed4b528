"""Steps that take something from the page: `extract` (text, an attribute or HTML,
of one element or all matches, into `result.values`) and `screenshot` (the page, the
full page or one element, into the artifact store)."""

from __future__ import annotations

from conveyor.v1 import task_pb2
from executor.browser.step_context import StepContext
from executor.browser.step_errors import invalid_step
from executor.browser.targets import act_on, for_action

_ATTRIBUTE_OF_ALL = "(elements, name) => elements.map((e) => e.getAttribute(name))"
_HTML_OF_ALL = "(elements) => elements.map((e) => e.innerHTML)"


def artifact_name(step_index: int, kind: str, extension: str) -> str:
    """Artifact names are made here, from the step's index, never from user input."""
    return f"step-{step_index:02d}-{kind}.{extension}"


async def extract(ctx: StepContext, action: task_pb2.ExtractAction) -> None:
    if not action.key:
        raise invalid_step("extract needs a key")
    if action.attribute and action.html:
        raise invalid_step("extract reads an attribute or HTML, not both")
    value: str | list[str | None] | None
    if action.all:
        found = await ctx.target(action.target, one=False)  # every match: resolved first
        if action.attribute:
            value = list(await found.locator.evaluate_all(_ATTRIBUTE_OF_ALL, action.attribute))
        elif action.html:
            value = list(await found.locator.evaluate_all(_HTML_OF_ALL))
        else:
            value = list(await found.locator.all_inner_texts())
        ctx.outputs.set_value(action.key, value)
        return
    # One element: a structured locator goes straight to the read, which waits for it
    # and is strict itself (targets.act_on); a selector is resolved first.
    found = await for_action(ctx, action.target)
    if action.attribute:
        value = await act_on(ctx, found, lambda e: e.get_attribute(
            action.attribute, timeout=ctx.deadline.remaining_ms()))
    elif action.html:
        value = await act_on(ctx, found, lambda e: e.inner_html(timeout=ctx.deadline.remaining_ms()))
    else:
        value = await act_on(ctx, found, lambda e: e.inner_text(timeout=ctx.deadline.remaining_ms()))
    ctx.outputs.set_value(action.key, value)


async def screenshot(ctx: StepContext, action: task_pb2.ScreenshotAction) -> None:
    if action.HasField("target"):
        if action.full_page:
            raise invalid_step("screenshot takes fullPage or a target, not both")
        found = await for_action(ctx, action.target)
        data = await act_on(ctx, found, lambda e: e.screenshot(type="png", timeout=ctx.deadline.remaining_ms()))
        kind = "element"
    else:
        data = await ctx.page.screenshot(
            type="png", full_page=action.full_page, timeout=ctx.deadline.remaining_ms()
        )
        kind = "fullpage" if action.full_page else "screenshot"
    name = artifact_name(ctx.index, kind, "png")
    await ctx.outputs.add_artifact(ctx.index, name, data, "image/png")
