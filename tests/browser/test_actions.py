"""Every step action on the project's test pages, each checked by what the page shows
afterwards (read back with `extract` or `expect`)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

from conveyor.artifacts import LocalArtifactStore
from conveyor.settings import Settings
from conveyor.v1 import job_pb2
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskRunner
from tests.browser.helpers import Progress, run_steps, values_of


def target(selector: str, *fallbacks: str) -> dict[str, object]:
    return {"selector": selector, "fallbacks": list(fallbacks)}


async def test_design_example_form_with_fallback_and_full_page_screenshot(
    runner: BrowserTaskRunner, pages_url: str, artifacts: LocalArtifactStore
) -> None:
    progress = Progress()
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {"fill": {"target": {"selector": "#name"}, "text": "Ada"}},
            {"click": {"target": {"selector": "#missing", "fallbacks": ["#submit"]}}},
            {"expect": {"target": {"selector": "#out"}, "textContains": "Hello Ada"}},
            {"extract": {"target": {"selector": "#out"}, "key": "greeting"}},
            {"screenshot": {"fullPage": True}},
        ],
        job_id="job-design-example",
        progress=progress,
    )
    assert values_of(result) == {"greeting": "Hello Ada"}
    assert [s.status for s in result.steps] == [job_pb2.STEP_STATUS_OK] * 6
    assert [s.action for s in result.steps] == [
        "navigate", "fill", "click", "expect", "extract", "screenshot"
    ]
    assert result.steps[2].matched_selector == "#submit"
    assert result.steps[1].matched_selector == "#name"
    assert all(s.duration.ToNanoseconds() > 0 for s in result.steps)
    (shot,) = result.artifacts
    assert (shot.name, shot.content_type, shot.step_index) == ("step-05-fullpage.png", "image/png", 5)
    size, content_type = await artifacts.stat("job-design-example", shot.name)
    assert (size, content_type) == (shot.size_bytes, "image/png")
    data = b"".join([c async for c in artifacts.iter_chunks("job-design-example", shot.name)])
    assert data.startswith(b"\x89PNG") and len(data) == size
    # Progress: a start and an end report per step, with the step's index and name.
    assert len(progress.calls) == 12
    assert progress.calls[0][0] == 0 and progress.calls[-1][0] == 100
    assert [c[2] for c in progress.calls] == [i for i in range(6) for _ in (0, 1)]
    assert progress.calls[2][3] == "fill #name"


async def test_fill_type_clear_and_press(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/keyboard.html", "waitUntil": "domcontentloaded"}},
            {"type": {"target": target("#search"), "text": "abc", "delay": "0.02s"}},
            {"expect": {"target": target("#keys"), "textEquals": "3 keys"}},
            {"press": {"target": target("#search"), "key": "Enter"}},
            {"extract": {"target": target("#submitted"), "key": "typed"}},
            {"clear": {"target": target("#search")}},
            {"expect": {"target": target("#search"), "value": ""}},
            {"fill": {"target": target("#search"), "text": "replaced"}},
            {"press": {"target": target("#search"), "key": "Enter"}},
            {"extract": {"target": target("#submitted"), "key": "filled"}},
        ],
    )
    assert values_of(result) == {"typed": "submitted: abc", "filled": "submitted: replaced"}


async def test_click_double_and_right(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/clicks.html"}},
            {"click": {"target": target("#single")}},
            {"click": {"target": target("#single")}},
            {"extract": {"target": target("#result"), "key": "single"}},
            {"click": {"target": target("#double"), "clickCount": 2}},
            {"extract": {"target": target("#result"), "key": "double"}},
            {"click": {"target": target("#context"), "button": "right"}},
            {"extract": {"target": target("#result"), "key": "right"}},
        ],
    )
    assert values_of(result) == {
        "single": "single clicks: 2",
        "double": "double clicked",
        "right": "right clicked (button 2)",
    }


async def test_hover_opens_menu(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/menu.html"}},
            {"expect": {"target": target("#item-save"), "hidden": True}},
            {"hover": {"target": target("#menu")}},
            {"expect": {"target": target("#item-save"), "visible": True}},
            {"click": {"target": target("#item-save")}},
            {"extract": {"target": target("#hovered"), "key": "hovered"}},
            {"extract": {"target": target("#chosen"), "key": "chosen"}},
        ],
    )
    assert values_of(result) == {"hovered": "menu hovered", "chosen": "chose Save"}


async def test_select_by_value_and_label(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/select.html"}},
            {"select": {"target": target("#color"), "values": ["g"]}},
            {"extract": {"target": target("#chosen"), "key": "by_value"}},
            {"select": {"target": target("#color"), "labels": ["Blue"]}},
            {"extract": {"target": target("#chosen"), "key": "by_label"}},
            {"select": {"target": target("#sizes"), "values": ["s", "l"]}},
            {"extract": {"target": target("#sizes-chosen"), "key": "multiple"}},
        ],
    )
    assert values_of(result) == {
        "by_value": "color g (Green)",
        "by_label": "color b (Blue)",
        "multiple": "sizes s,l",
    }


async def test_check_and_uncheck(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/checkboxes.html"}},
            {"expect": {"target": target("#state"), "textEquals": "agree=false news=true plan=free"}},
            {"check": {"target": target("#agree")}},
            {"uncheck": {"target": target("#news")}},
            {"check": {"target": target("#plan-pro")}},
            {"extract": {"target": target("#state"), "key": "state"}},
        ],
    )
    assert values_of(result) == {"state": "agree=true news=false plan=pro"}


async def test_scroll_into_view_loads_lazy_content_and_by_offset(
    runner: BrowserTaskRunner, pages_url: str
) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/lazy.html"}},
            {"expect": {"target": target("#lazy"), "textEquals": "placeholder"}},
            {"scroll": {"dy": 800}},
            {"expect": {"target": target("#scrolled"), "textEquals": "scrollY=800"}},
            {"scroll": {"target": target("#lazy")}},
            {"expect": {"target": target("#lazy"), "textEquals": "loaded lazily"}},
            {"extract": {"target": target("#lazy"), "key": "lazy"}},
        ],
    )
    assert values_of(result) == {"lazy": "loaded lazily"}


async def test_waits_for_late_content(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/late.html?delay=500", "waitUntil": "commit"}},
            {"wait": {"loadState": "domcontentloaded"}},
            {"wait": {"target": target("#late"), "state": "visible"}},
            {"wait": {"target": target("#spinner"), "state": "hidden"}},
            {"wait": {"urlContains": "#done"}},
            {"wait": {"duration": "0.05s"}},
            {"extract": {"target": target("#late"), "key": "late"}},
        ],
    )
    assert values_of(result) == {"late": "arrived late"}
    assert result.steps[2].matched_selector == "#late"


async def test_expect_conditions_auto_wait(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/late.html?delay=400"}},
            {"expect": {"titleContains": "Ready"}},
            {"expect": {"urlContains": "#done"}},
            {"expect": {"target": target("#late"), "visible": True}},
            {"expect": {"target": target("#spinner"), "hidden": True}},
            {"expect": {"target": target("#late"), "textEquals": "arrived late"}},
            {"expect": {"target": target("#late"), "textContains": "late"}},
            {"navigate": {"url": f"{pages_url}/list.html"}},
            {"expect": {"target": target("li.item"), "count": 3}},
            {"expect": {"target": target("li.missing"), "count": 0}},
            {"navigate": {"url": f"{pages_url}/form.html"}},
            {"expect": {"target": target("#email"), "value": "someone@example.org"}},
        ],
    )
    assert all(s.status == job_pb2.STEP_STATUS_OK for s in result.steps)


async def test_extract_text_attribute_html_and_all(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/list.html"}},
            {"extract": {"target": target("#heading"), "key": "text"}},
            {"extract": {"target": target("#heading"), "key": "kind", "attribute": "data-kind"}},
            {"extract": {"target": target("#heading"), "key": "nothing", "attribute": "data-none"}},
            {"extract": {"target": target("#card"), "key": "html", "html": True}},
            {"extract": {"target": target("li.item"), "key": "names", "all": True}},
            {"extract": {"target": target("li.item a"), "key": "links", "all": True, "attribute": "href"}},
            {"extract": {"target": target("li.item"), "key": "items_html", "all": True, "html": True}},
        ],
    )
    values = values_of(result)
    assert values["text"] == "Fruits"
    assert values["kind"] == "fruits"
    assert values["nothing"] is None
    assert values["html"] == "<b>Bold</b> and <i>italic</i>"
    assert values["names"] == ["Apple", "Banana", "Cherry"]
    assert values["links"] == ["/fruit/apple", "/fruit/banana", "/fruit/cherry"]
    assert values["items_html"][0] == '<a href="/fruit/apple">Apple</a>'


async def test_screenshots_of_page_and_element(
    runner: BrowserTaskRunner, pages_url: str, artifacts: LocalArtifactStore
) -> None:
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/lazy.html"}},
            {"screenshot": {}},
            {"screenshot": {"fullPage": True}},
            {"screenshot": {"target": target("#scrolled")}},
        ],
        job_id="job-screenshots",
    )
    names = [a.name for a in result.artifacts]
    assert names == ["step-01-screenshot.png", "step-02-fullpage.png", "step-03-element.png"]
    sizes = {a.name: a.size_bytes for a in result.artifacts}
    for artifact in result.artifacts:
        size, content_type = await artifacts.stat("job-screenshots", artifact.name)
        assert size == artifact.size_bytes > 0 and content_type == "image/png"
    # The full page (4000px tall) is a bigger picture than the viewport and the element.
    assert sizes["step-02-fullpage.png"] > sizes["step-01-screenshot.png"] > sizes["step-03-element.png"]


async def test_upload_files_sent_with_the_task(runner: BrowserTaskRunner, pages_url: str) -> None:
    report = b"%PDF-1.4 test report\n" * 10
    notes = b"some notes"
    result = await run_steps(
        runner,
        [
            {"navigate": {"url": f"{pages_url}/upload.html"}},
            {"upload": {"target": target("#file"), "files": ["report.pdf", "notes.txt"]}},
            {"extract": {"target": target("#uploaded"), "key": "uploaded"}},
        ],
        files=[
            {"name": "report.pdf", "content": base64.b64encode(report).decode()},
            {"name": "notes.txt", "content": base64.b64encode(notes).decode()},
        ],
    )
    assert values_of(result) == {
        "uploaded": f"report.pdf {len(report)} bytes; notes.txt {len(notes)} bytes"
    }
    # The job's staging directory is gone with the job.
    assert entries(runner.staging_root) == []


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def test_staging_left_by_a_dead_process_is_removed(
    pool: BrowserPool, artifacts: LocalArtifactStore, settings: Settings, tmp_path: Path
) -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    for name in (f"p{dead.pid}-job-1-abc", f"p{os.getpid()}-job-2-def", "unrelated"):
        (tmp_path / name).mkdir()
    BrowserTaskRunner(pool, artifacts, settings, staging_root=tmp_path)
    assert entries(tmp_path) == [f"p{os.getpid()}-job-2-def", "unrelated"]
