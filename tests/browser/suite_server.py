"""A page server for suite and recording tests: `/flaky/<key>` fails (shows
"fail") the first time each key is asked for and passes ("ok") after, so a test
aimed at it fails its first attempt and passes its retry -- deterministically."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        seen: dict[str, int] = getattr(self.server, "seen")  # noqa: B009
        lock: threading.Lock = getattr(self.server, "lock")  # noqa: B009
        if not self.path.startswith("/flaky/"):
            self.send_error(404)
            return
        with lock:
            seen[self.path] = seen.get(self.path, 0) + 1
            hits = seen[self.path]
        state = "fail" if hits == 1 else "ok"
        body = f"<!doctype html><title>flaky</title><p id='state'>{state}</p><p id='hits'>{hits}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def flaky_server() -> Iterator[str]:
    """Yields the server's base URL (http://127.0.0.1:<port>)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    server.daemon_threads = True
    server.seen = {}  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="flaky-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
