"""Fixtures for the browser executor: the project's test pages served on loopback, a
browser pool and runner on real Chromium, and a helper that runs a task given in the
protobuf JSON form of DESIGN.md."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts import LocalArtifactStore
from conveyor.settings import Settings
from executor.browser.pool import BrowserPool
from executor.browser.runner import BrowserTaskRunner
from tests.browser.helpers import make_settings

PAGES = Path(__file__).resolve().parents[1] / "pages"


class _PagesHandler(http.server.SimpleHTTPRequestHandler):
    """The pages, plus `/redirect?to=<url>` (302) and `/slow?ms=<n>` (answers late)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(PAGES), **kwargs)

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        if parsed.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.get("to", ["/form.html"])[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if parsed.path == "/slow":
            # Stalls the way a slow server does; stops early when the suite ends.
            self.server_stopping().wait(int(query.get("ms", ["3000"])[0]) / 1000)
            body = b"<p id='slow'>slow page</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def server_stopping(self) -> threading.Event:
        stopping: threading.Event = getattr(self.server, "stopping")  # noqa: B009
        return stopping

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="session")
def pages_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PagesHandler)
    server.daemon_threads = True
    stopping = threading.Event()
    server.stopping = stopping  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="test-pages", daemon=True)
    thread.start()
    yield server
    stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def pages_port(pages_server: http.server.ThreadingHTTPServer) -> int:
    return int(pages_server.server_address[1])


@pytest.fixture(scope="session")
def pages_url(pages_port: int) -> str:
    """The test pages on 127.0.0.1 (which the default test settings allow)."""
    return f"http://127.0.0.1:{pages_port}"


@pytest.fixture(scope="session")
def browser_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-data")


@pytest.fixture(scope="session")
def settings(browser_data: Path) -> Settings:
    return make_settings(browser_data)


@pytest.fixture(scope="session")
async def pool(settings: Settings, browser_data: Path) -> AsyncIterator[BrowserPool]:
    """The pool shared by tests that do not care which browser they get."""
    async with BrowserPool(settings, run_dir=browser_data / "browsers") as shared:
        yield shared


@pytest.fixture(scope="session")
def artifacts(browser_data: Path) -> LocalArtifactStore:
    return LocalArtifactStore(browser_data / "artifacts")


@pytest.fixture(scope="session")
def runner(pool: BrowserPool, artifacts: LocalArtifactStore, settings: Settings) -> BrowserTaskRunner:
    return BrowserTaskRunner(pool, artifacts, settings)
