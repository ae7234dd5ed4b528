"""executor/http_fetch.py against real HTTP(S) servers on loopback: bodies (sized,
chunked, to EOF), redirects (each hop through the URL policy), error statuses,
refusals, names that do not resolve, size and time limits, TLS verification."""

from __future__ import annotations

import http.server
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from conveyor.kinds import PermanentError, RetryableError
from executor.browser.url_policy import IPAddress, UrlPolicy
from executor.http_fetch import HttpResponse, fetch

LOOPBACK = UrlPolicy(["127.0.0.1"])
LOOPBACK_ADDRESS: IPAddress = ipaddress.ip_address("127.0.0.1")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
        self.server.record(self.path, {k.lower(): v for k, v in self.headers.items()})
        route = getattr(self, "route_" + parts.path.strip("/").split("/")[0], None)
        if route is None:
            self.answer(404, b"not here", "text/plain")
        else:
            route(parts.path, query)

    def answer(self, status: int, body: bytes, content_type: str = "text/plain",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def route_hello(self, path: str, query: dict[str, str]) -> None:
        self.answer(200, "café crème".encode("latin-1"), "text/plain; charset=ISO-8859-1",
                    {"X-Test": "one", "x-test": "two"})

    def route_echo(self, path: str, query: dict[str, str]) -> None:
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        self.answer(200, body.encode(), "application/json")

    def route_chunked(self, path: str, query: dict[str, str]) -> None:
        size = int(query.get("n", "0"))
        pieces = [b"first piece, ", b"second piece, ", b"x" * size, b"last"]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in pieces:
            if piece:
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")

    def route_eof(self, path: str, query: dict[str, str]) -> None:
        size = int(query.get("n", "0"))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"until the end " + b"y" * size)
        self.close_connection = True

    def route_big(self, path: str, query: dict[str, str]) -> None:
        self.answer(200, b"z" * int(query["n"]))

    def route_hop(self, path: str, query: dict[str, str]) -> None:
        # /hop/3 -> /hop/2 -> /hop/1 -> /hello, each a different redirect status.
        left = int(path.rsplit("/", 1)[1])
        status = {3: 301, 2: 307, 1: 308}.get(left, 302)
        location = f"/hop/{left - 1}#frag" if left > 1 else f"http://127.0.0.1:{self.server.port}/hello"
        self.answer(status, b"moved", headers={"Location": location})

    def route_to(self, path: str, query: dict[str, str]) -> None:
        self.answer(302, b"", headers={"Location": query["url"]})

    def route_loop(self, path: str, query: dict[str, str]) -> None:
        self.answer(302, b"", headers={"Location": "/loop"})

    def route_empty(self, path: str, query: dict[str, str]) -> None:
        self.send_response(204)
        self.end_headers()

    def route_stall(self, path: str, query: dict[str, str]) -> None:
        self.server.stopping.wait(60)  # answers only when the test ends

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    """A loopback server that logs every request (path and headers)."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        super().__init__((host, 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.host = host
        self.port = int(self.server_address[1])
        self.scheme = "https" if tls else "http"
        self.stopping = threading.Event()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, headers))

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


@pytest.fixture
def other_server() -> Iterator[_Server]:
    """Another loopback address, not allowed by LOOPBACK's policy."""
    with _Server("127.0.0.2") as s:
        yield s


async def test_200_with_body_headers_and_charset(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/hello"))
    assert isinstance(response, HttpResponse)
    assert (response.status, response.url, response.redirects) == (200, server.url("/hello"), [])
    assert response.body == "café crème".encode("latin-1")
    assert response.text() == "café crème"  # decoded as the charset said, not as utf-8
    assert response.headers["content-type"] == "text/plain; charset=ISO-8859-1"
    assert response.headers["Content-Type"] == response.headers["content-type"]
    assert response.headers["x-test"] == "one, two"
    assert all(name == name.lower() for name in response.headers)


async def test_sends_host_connection_close_and_caller_headers(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/echo?a=1&b=2#not-sent"), headers={"X-Token": "t1"})
    seen = json.loads(response.text())
    assert seen["path"] == "/echo?a=1&b=2"
    assert seen["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert seen["headers"]["connection"] == "close"
    assert seen["headers"]["x-token"] == "t1"
    assert seen["headers"]["accept-encoding"] == "identity"
    with pytest.raises(ValueError, match="Host"):
        await fetch(LOOPBACK, server.url("/echo"), headers={"Host": "elsewhere"})
    with pytest.raises(ValueError, match="invalid header"):
        await fetch(LOOPBACK, server.url("/echo"), headers={"X-Bad": "a\r\nInjected: 1"})


async def test_chunked_body(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/chunked?n=100000"))
    assert response.status == 200
    assert response.body == b"first piece, second piece, " + b"x" * 100_000 + b"last"
    assert "content-length" not in response.headers


async def test_body_read_to_eof_and_no_body_statuses(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/eof?n=70000"))
    assert response.body == b"until the end " + b"y" * 70_000
    empty = await fetch(LOOPBACK, server.url("/empty"))
    assert (empty.status, empty.body) == (204, b"")


async def test_redirect_chain_is_followed(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/hop/3"))
    assert (response.status, response.url) == (200, server.url("/hello"))
    assert response.redirects == [server.url("/hop/3"), server.url("/hop/2"), server.url("/hop/1")]
    assert server.paths == ["/hop/3", "/hop/2", "/hop/1", "/hello"]  # fragments never sent


async def test_redirect_not_followed_when_asked(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/hop/3"), follow_redirects=False)
    assert (response.status, response.headers["location"], response.redirects) == (301, "/hop/2#frag", [])
    assert server.paths == ["/hop/3"]


async def test_each_redirect_hop_is_checked_by_the_policy(server: _Server, other_server: _Server) -> None:
    target = urllib.parse.quote(other_server.url("/hello"), safe="")
    with pytest.raises(PermanentError) as caught:
        await fetch(LOOPBACK, server.url(f"/to?url={target}"))
    assert caught.value.reason == "URL_POLICY_VIOLATION"
    assert caught.value.code == code_pb2.PERMISSION_DENIED
    assert "127.0.0.2" in caught.value.message and "loopback" in caught.value.message
    assert other_server.paths == []  # never connected to
    # Allowed there too, the same hop is followed.
    both = UrlPolicy(["127.0.0.1", "127.0.0.2"])
    response = await fetch(both, server.url(f"/to?url={target}"))
    assert (response.status, response.url) == (200, other_server.url("/hello"))
    assert other_server.paths == ["/hello"]


async def test_redirect_to_another_scheme_or_nowhere_is_refused(server: _Server) -> None:
    with pytest.raises(PermanentError) as caught:
        await fetch(LOOPBACK, server.url("/to?url=file:///etc/passwd"))
    assert caught.value.reason == "URL_POLICY_VIOLATION"
    with pytest.raises(PermanentError) as unreadable:
        await fetch(LOOPBACK, server.url("/to?url=http://[bad"))
    assert unreadable.value.reason == "BAD_REDIRECT"


async def test_too_many_redirects(server: _Server) -> None:
    with pytest.raises(PermanentError) as caught:
        await fetch(LOOPBACK, server.url("/loop"), max_redirects=4)
    assert caught.value.reason == "TOO_MANY_REDIRECTS"
    assert server.paths == ["/loop"] * 5


async def test_404_is_an_answer_not_an_error(server: _Server) -> None:
    response = await fetch(LOOPBACK, server.url("/nothing/here"))
    assert (response.status, response.text()) == (404, "not here")


async def test_loopback_refused_unless_allowed(server: _Server) -> None:
    for policy in (UrlPolicy(), UrlPolicy(["example.com"])):
        with pytest.raises(PermanentError) as caught:
            await fetch(policy, server.url("/hello"))
        assert (caught.value.reason, caught.value.code) == ("URL_POLICY_VIOLATION", code_pb2.PERMISSION_DENIED)
        assert not caught.value.retryable
    assert server.paths == []


async def test_a_name_is_connected_to_at_the_addresses_the_policy_checked(server: _Server) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        lookups.append(host)
        return [LOOPBACK_ADDRESS]

    # A public-looking name that resolves to loopback is refused...
    with pytest.raises(PermanentError, match=r"resolves to 127\.0\.0\.1"):
        await fetch(UrlPolicy(resolver=resolver), f"http://public.test:{server.port}/hello")
    # ...and an allowed one is reached at the policy's addresses, under its own name.
    policy = UrlPolicy(["site.test"], resolver=resolver)
    response = await fetch(policy, f"http://site.test:{server.port}/echo")
    assert json.loads(response.text())["headers"]["host"] == f"site.test:{server.port}"
    assert lookups == ["public.test", "site.test"]


async def test_invalid_host_is_not_resolved() -> None:
    for policy in (UrlPolicy(), UrlPolicy(["other.invalid"])):  # checked by the policy / allowed, then resolved
        with pytest.raises(RetryableError) as caught:
            await fetch(policy, "http://other.invalid/page")
        assert caught.value.reason == "HOST_NOT_RESOLVED"
        assert caught.value.retryable


async def test_max_bytes(server: _Server) -> None:
    exact = await fetch(LOOPBACK, server.url("/big?n=5000"), max_bytes=5000)
    assert exact.body == b"z" * 5000
    for path in ("/big?n=5001", "/chunked?n=6000", "/eof?n=6000"):
        with pytest.raises(PermanentError) as caught:
            await fetch(LOOPBACK, server.url(path), max_bytes=5000)
        assert caught.value.reason == "RESPONSE_TOO_LARGE", path
        assert caught.value.metadata["max_bytes"] == "5000"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as held:  # bound, never listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(RetryableError) as caught:
            await fetch(LOOPBACK, f"http://127.0.0.1:{port}/")
    assert caught.value.reason == "FETCH_FAILED"
    assert "cannot connect" in caught.value.message


async def test_timeout_is_retryable(server: _Server) -> None:
    with pytest.raises(RetryableError) as caught:
        await fetch(LOOPBACK, server.url("/stall"), timeout=0.5)
    assert caught.value.reason == "FETCH_FAILED"
    assert "within 0.5s" in caught.value.message


# --- TLS ------------------------------------------------------------------------------


def _self_signed(tmp: Path, san: str) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=conveyor-test",
         "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_https_verifies_the_certificate_and_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path, "IP:127.0.0.1")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with _Server(tls=tls) as secure:
        # Not trusted: refused by verification.
        with pytest.raises(RetryableError) as caught:
            await fetch(LOOPBACK, secure.url("/hello"))
        assert caught.value.reason == "FETCH_FAILED"
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
        # Trusted (OpenSSL reads SSL_CERT_FILE for the default verify paths): fetched.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        response = await fetch(LOOPBACK, secure.url("/hello"))
        assert (response.status, response.text()) == (200, "café crème")
    (tmp_path / "other").mkdir()
    other_cert, other_key = _self_signed(tmp_path / "other", "DNS:somewhere.else")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(other_cert, other_key)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_cert))
    with _Server(tls=tls) as wrong_name, pytest.raises(RetryableError) as mismatch:
        await fetch(LOOPBACK, wrong_name.url("/hello"))
    assert "CERTIFICATE_VERIFY_FAILED" in mismatch.value.message  # trusted, but not for this name
