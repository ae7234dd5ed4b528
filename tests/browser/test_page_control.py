"""Page state and control on real Chromium: evaluate and waitForFunction (local
storage, as real suites check it), history, focus/blur/dispatchEvent, drag and drop,
keyboard and mouse without a target, dialogs, popups, downloads as artifacts, and
the task's context options (device, locale, time zone, color scheme, viewport,
extra headers, cookies)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from conveyor.artifacts import LocalArtifactStore
from conveyor.browser_steps import devices
from conveyor.v1 import job_pb2, job_service_pb2
from executor.browser.page_control import download_name
from executor.browser.runner import BrowserTaskFailed, BrowserTaskRunner
from gateway.validation import Limits, validate_submit
from tests.browser.helpers import Progress, browser_task, new_job_id, run_steps, values_of

LIMITS = Limits(max_steps=200, max_file_bytes=5 << 20, max_request_bytes=8 << 20, max_job_timeout_ms=3_600_000)


def sel(selector: str) -> dict[str, str]:
    return {"selector": selector}


async def test_evaluate_wait_for_function_and_history(runner: BrowserTaskRunner, pages_url: str) -> None:
    control = f"{pages_url}/control.html"
    result = await run_steps(runner, [
        {"navigate": {"url": control}},
        {"fill": {"target": {"locator": {"placeholder": "What needs to be done?"}}, "text": "Milk"}},
        {"press": {"target": sel("#todo"), "key": "Enter"}},
        {"click": {"target": sel("#add")}},
        # The app saves a moment later: wait for it the way Playwright suites do.
        {"waitForFunction": {"expression": "(n) => JSON.parse(localStorage.getItem('todos') || '[]').length === n",
                             "arg": 1, "polling": "0.05s"}},
        {"evaluate": {"expression": "() => JSON.parse(localStorage.getItem('todos'))", "key": "todos"}},
        {"evaluate": {"expression": "localStorage.length", "key": "length"}},
        {"evaluate": {"expression": "([a, b]) => ({sum: a + b, ok: true, none: null})", "arg": [2, 3], "key": "obj"}},
        {"evaluate": {"target": sel("#todo"), "expression": "(e, p) => e.placeholder + p", "arg": "!", "key": "el"}},
        # With expected: polled until equal (the second todo is saved 200 ms later).
        {"fill": {"target": sel("#todo"), "text": "Eggs"}},
        {"click": {"target": sel("#add")}},
        {"evaluate": {"expression": "() => JSON.parse(localStorage.getItem('todos'))", "expected": ["Milk", "Eggs"]}},
        {"reload": {}},
        {"expect": {"target": {"locator": {"css": "#list li"}}, "text": {"values": ["Milk", "Eggs"]}}},
        {"click": {"target": sel("#page2")}},
        {"expect": {"url": {"value": "#two$", "regex": True}}},
        {"goBack": {}},
        {"expect": {"url": {"value": control}}},
        {"goForward": {}},
        {"expect": {"urlContains": "#two"}},
        {"navigate": {"url": f"{pages_url}/form.html"}},
        {"goBack": {"waitUntil": "domcontentloaded"}},
        {"expect": {"title": {"value": "Control"}}},
    ])
    assert values_of(result) == {
        "todos": ["Milk"],
        "length": 1,
        "obj": {"sum": 5, "ok": True, "none": None},
        "el": "What needs to be done?!",
    }


async def test_evaluate_and_wait_for_function_failures(runner: BrowserTaskRunner, pages_url: str) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/control.html"}},
            {"name": "two todos", "timeout": "0.5s",
             "evaluate": {"expression": "() => localStorage.length", "expected": 2}},
        ])
    assert caught.value.reason == "EXPECTATION_FAILED"
    assert "steps[1] 'two todos' (evaluate): expectation not met: expected '() => localStorage.length' " \
           "to return 2, actual 0" in caught.value.message
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/control.html"}},
            {"timeout": "0.4s", "waitForFunction": {"expression": "() => window.neverSet === true"}},
        ])
    assert caught.value.reason == "STEP_TIMEOUT"
    assert "'() => window.neverSet === true' did not become truthy" in caught.value.message
    with pytest.raises(BrowserTaskFailed) as caught:
        # Back to the page's first entry (about:blank), then there is nothing before it.
        await run_steps(runner, [{"navigate": {"url": f"{pages_url}/control.html"}}, {"goBack": {}}, {"goBack": {}}])
    assert (caught.value.reason, caught.value.retryable) == ("NO_HISTORY", False)
    assert caught.value.message.startswith("steps[2] 'go_back' (go_back): there is no page to go back to")


async def test_focus_blur_events_drag_keyboard_and_mouse(runner: BrowserTaskRunner, pages_url: str) -> None:
    result = await run_steps(runner, [
        {"navigate": {"url": f"{pages_url}/control.html"}},
        {"focus": {"target": sel("#todo")}},
        {"expect": {"target": sel("#todo"), "focused": True}},
        {"extract": {"target": sel("#focus-log"), "key": "focus"}},
        {"blur": {"target": sel("#todo")}},
        {"expect": {"target": sel("#focus-log"), "text": {"value": "blurred"}}},
        {"dispatchEvent": {"target": sel("#events"), "type": "dblclick", "eventInit": {"bubbles": True}}},
        {"extract": {"target": sel("#events"), "key": "dblclick"}},
        {"dispatchEvent": {"target": sel("#events"), "type": "ping"}},
        {"drag": {"source": sel("#source"), "target": sel("#dest")}},
        {"expect": {"target": sel("#dropped"), "text": {"value": "dropped card"}}},
        {"focus": {"target": sel("#todo")}},
        {"keyboard": {"type": "ab"}},
        {"keyboard": {"press": "Shift+C"}},
        {"keyboard": {"down": "x"}},
        {"keyboard": {"up": "x"}},
        {"keyboard": {"insertText": "yz"}},
        {"expect": {"target": sel("#todo"), "value": "abCxyz"}},
        {"expect": {"target": sel("#keys"), "text": {"value": "a,b,Shift,C,x"}}},
        {"mouse": {"move": {"x": 50, "y": 450, "steps": 3}}},
        {"expect": {"target": sel("#pad"), "attribute": {"name": "data-moved", "value": {"value": "50,450"}}}},
        {"mouse": {"click": {"x": 100, "y": 500}}},
        {"expect": {"target": sel("#mouse"), "text": {"value": "click 100,500"}}},
        {"mouse": {"down": {}}},
        {"mouse": {"up": {"button": "left"}}},
        {"mouse": {"wheel": {"dy": 120}}},
        {"expect": {"target": sel("#mouse"), "text": {"value": "wheel 120"}}},
    ])
    values = values_of(result)
    assert values["focus"] == "focused"
    assert values["dblclick"] == "dblclick bubbles=true"
    assert result.steps[9].matched_selector == "#source -> #dest"


async def test_dialogs_popups_and_downloads(
    runner: BrowserTaskRunner, pages_url: str, artifacts: LocalArtifactStore
) -> None:
    job_id = new_job_id()
    result = await run_steps(runner, [
        {"navigate": {"url": f"{pages_url}/control.html"}},
        # Without a dialog step, dialogs are dismissed (as in Playwright).
        {"click": {"target": sel("#confirm")}},
        {"expect": {"target": sel("#dialog"), "text": {"value": "confirm=false"}}},
        {"dialog": {"action": "accept", "key": "confirm_message"}},
        {"click": {"target": sel("#confirm")}},
        {"expect": {"target": sel("#dialog"), "text": {"value": "confirm=true"}}},
        {"dialog": {"action": "accept", "promptText": "Ada", "key": "prompt_message"}},
        {"click": {"target": sel("#prompt")}},
        {"expect": {"target": sel("#dialog"), "text": {"value": "prompt=Ada"}}},
        {"dialog": {"action": "dismiss"}},
        {"click": {"target": sel("#prompt")}},
        {"expect": {"target": sel("#dialog"), "text": {"value": "prompt=null"}}},
        {"click": {"target": sel("#alert")}},
        {"expect": {"target": sel("#dialog"), "text": {"value": "alerted"}}},
        # A new tab from a link, then a window.open popup; switch to each, and back.
        {"click": {"target": sel("#popup")}},
        {"switchPage": {"new": True}},
        {"expect": {"title": {"value": "Popup"}}},
        {"extract": {"target": sel("#popup-heading"), "key": "popup"}},
        {"switchPage": {"index": 0}},
        {"expect": {"title": {"value": "Control"}}},
        {"click": {"target": sel("#open-window")}},
        {"switchPage": {"urlContains": "popup.html?w=1", "closeCurrent": True}},
        {"expect": {"urlContains": "?w=1"}},
        {"switchPage": {"index": 1}},
        {"expect": {"url": {"value": f"{pages_url}/popup.html"}}},
        {"navigate": {"url": f"{pages_url}/control.html"}},
        # A download, saved as an artifact of the job.
        {"download": {"target": {"locator": {"role": "link", "name": "Export"}}}},
    ], job_id=job_id)
    values = values_of(result)
    assert values["confirm_message"] == "Sure?"
    assert values["prompt_message"] == "Your name?"
    assert values["popup"] == "A popup"
    (download,) = result.artifacts
    assert (download.name, download.step_index, download.content_type) == (
        "step-26-download-report.csv", 26, "text/csv"
    )
    data = b"".join([c async for c in artifacts.iter_chunks(job_id, download.name)])
    assert data == b"id,name\n1,Ada\n2,Grace\n" and download.size_bytes == len(data)


async def test_switch_page_waits_and_fails_clearly(runner: BrowserTaskRunner, pages_url: str) -> None:
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [
            {"navigate": {"url": f"{pages_url}/control.html"}},
            {"timeout": "0.4s", "switchPage": {"new": True}},
        ])
    assert caught.value.reason == "STEP_TIMEOUT"
    assert "waited for a new page to open" in caught.value.message
    with pytest.raises(BrowserTaskFailed) as caught:
        await run_steps(runner, [{"navigate": {"url": f"{pages_url}/control.html"}}, {"switchPage": {"index": 3}}])
    assert (caught.value.reason, caught.value.retryable) == ("PAGE_NOT_FOUND", False)


def test_download_names_are_safe() -> None:
    assert download_name(3, "../../etc/passwd") == "step-03-download-etc_passwd"
    assert download_name(12, "") == "step-12-download-file"
    assert download_name(1, "Rapport März 2026.pdf") == "step-01-download-Rapport_M_rz_2026.pdf"


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the request's headers, as a page (for extra headers and cookies)."""

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = f"<pre id='headers'>{json.dumps(headers)}</pre>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


async def test_context_options_emulate_a_device_locale_time_zone_and_send_headers_and_cookies(
    runner: BrowserTaskRunner, pages_url: str, echo_url: str
) -> None:
    task = browser_task([
        {"navigate": {"url": f"{pages_url}/emulation.html"}},
        {"evaluate": {"expression": "() => JSON.parse(document.getElementById('info').textContent)", "key": "info"}},
        {"navigate": {"url": f"{echo_url}/echo"}},
        {"evaluate": {"expression": "() => JSON.parse(document.getElementById('headers').textContent)",
                      "key": "headers"}},
    ])
    json_format.ParseDict({
        "device": "Pixel 7",
        "locale": "de-DE",
        "timezoneId": "Asia/Tokyo",
        "colorScheme": "dark",
        "reducedMotion": "reduce",
        "extraHttpHeaders": {"X-Suite": "conveyor"},
        "cookies": [
            {"name": "seen", "value": "1", "url": pages_url},
            {"name": "token", "value": "abc", "domain": "127.0.0.1", "path": "/", "httpOnly": True},
        ],
    }, task.context)
    result = await runner.run(new_job_id(), task, Progress())
    values = values_of(result)
    info, headers = values["info"], values["headers"]
    pixel = devices()["Pixel 7"]
    assert info["userAgent"] == pixel["user_agent"]
    assert (info["width"], info["height"]) == (pixel["viewport"]["width"], pixel["viewport"]["height"])
    assert info["touch"] is True
    assert (info["language"], info["timeZone"], info["dark"], info["reducedMotion"]) == (
        "de-DE", "Asia/Tokyo", True, True
    )
    assert info["cookie"] == "seen=1"  # token is httpOnly: the page does not see it
    assert headers["x-suite"] == "conveyor"
    assert headers["accept-language"].startswith("de-DE")
    assert sorted(headers["cookie"].split("; ")) == ["seen=1", "token=abc"]

    # A viewport and user agent of its own, without a device.
    plain = browser_task([
        {"navigate": {"url": f"{pages_url}/emulation.html"}},
        {"evaluate": {"expression": "() => JSON.parse(document.getElementById('info').textContent)", "key": "info"}},
    ])
    json_format.ParseDict({"viewport": {"width": 500, "height": 400}, "userAgent": "conveyor-test/1.0"}, plain.context)
    info = values_of(await runner.run(new_job_id(), plain, Progress()))["info"]
    assert (info["width"], info["height"], info["userAgent"], info["dark"]) == (500, 400, "conveyor-test/1.0", False)


def violations(browser: dict[str, Any]) -> dict[str, str]:
    req = json_format.ParseDict({"queue": "q", "browser": browser}, job_service_pb2.SubmitJobRequest())
    return {v.field: v.description for v in validate_submit(req, LIMITS)}


@pytest.mark.parametrize(
    ("browser", "field"),
    [
        ({"steps": [{"evaluate": {"expression": " "}}]}, "browser.steps[0].evaluate.expression"),
        ({"steps": [{"evaluate": {"expression": "1", "key": "9bad"}}]}, "browser.steps[0].evaluate.key"),
        ({"steps": [{"waitForFunction": {"expression": "1", "polling": "0.001s"}}]},
         "browser.steps[0].wait_for_function.polling"),
        ({"steps": [{"goBack": {"waitUntil": "soon"}}]}, "browser.steps[0].go_back.wait_until"),
        ({"steps": [{"dispatchEvent": {"target": {"selector": "#a"}}}]}, "browser.steps[0].dispatch_event.type"),
        ({"steps": [{"drag": {"target": {"selector": "#a"}}}]}, "browser.steps[0].drag.source.selector"),
        ({"steps": [{"keyboard": {}}]}, "browser.steps[0].keyboard"),
        ({"steps": [{"mouse": {"click": {"x": -1, "y": 2}}}]}, "browser.steps[0].mouse.click.x"),
        ({"steps": [{"mouse": {"down": {"button": "side"}}}]}, "browser.steps[0].mouse.down.button"),
        ({"steps": [{"dialog": {"action": "ignore"}}]}, "browser.steps[0].dialog.action"),
        ({"steps": [{"switchPage": {}}]}, "browser.steps[0].switch_page"),
        ({"steps": [{"switchPage": {"index": 500}}]}, "browser.steps[0].switch_page.index"),
        ({"steps": [{"download": {}}]}, "browser.steps[0].download.target.selector"),
        ({"steps": [{"reload": {}}], "context": {"device": "Nokia 3310"}}, "browser.context.device"),
        ({"steps": [{"reload": {}}], "context": {"timezoneId": "Mars/Olympus"}}, "browser.context.timezone_id"),
        ({"steps": [{"reload": {}}], "context": {"locale": "not a locale"}}, "browser.context.locale"),
        ({"steps": [{"reload": {}}], "context": {"colorScheme": "sepia"}}, "browser.context.color_scheme"),
        ({"steps": [{"reload": {}}], "context": {"viewport": {"width": 0, "height": 10}}},
         "browser.context.viewport.width"),
        ({"steps": [{"reload": {}}], "context": {"extraHttpHeaders": {"Bad Header": "x"}}},
         "browser.context.extra_http_headers['Bad Header']"),
        ({"steps": [{"reload": {}}], "context": {"cookies": [{"name": "a", "value": "b"}]}},
         "browser.context.cookies[0].domain"),
        ({"steps": [{"reload": {}}], "context": {"cookies": [{"name": "a", "url": "ftp://x"}]}},
         "browser.context.cookies[0].url"),
    ],
)
def test_page_control_steps_and_context_options_are_validated(browser: dict[str, Any], field: str) -> None:
    found = violations(browser)
    assert field in found, found


def test_a_valid_task_with_every_new_step_passes_validation() -> None:
    assert violations({
        "steps": [
            {"evaluate": {"expression": "() => 1", "expected": 1}, "soft": True},
            {"mouse": {"wheel": {"dy": -300}}},
            {"switchPage": {"new": True}},
        ],
        "context": {"device": "iPhone 13", "timezoneId": "Europe/Berlin", "locale": "en-GB"},
    }) == {}
    assert job_pb2.STEP_STATUS_OK  # the enum the runner reports with
