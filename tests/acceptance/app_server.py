"""Serves the vendored TodoMVC app (tests/acceptance/app/) on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent / "app"
APP_PATH = "/examples/vanillajs/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_app() -> Iterator[str]:
    """Yields the app's URL (http://127.0.0.1:<port>/examples/vanillajs/)."""
    handler = functools.partial(_Quiet, directory=str(APP_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="todomvc", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{APP_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
