"""Plain HTTP(S) GET for job kinds: what is behind `JobContext.fetch`.

Standard library only (asyncio streams, HTTP/1.1, one request per connection with
`Connection: close`). Every connection goes through the job's URL policy -- the first
request and each redirect hop alike -- and connects to the addresses the policy
checked, never to a fresh resolution of the name (so a name cannot resolve to a
public address for the check and to a private one for the connection).

Failures are the kind API's errors:
- a URL the policy refuses (a private or loopback address not allowed by
  configuration, a scheme other than http/https): PermanentError
  URL_POLICY_VIOLATION (PERMISSION_DENIED);
- a name that does not resolve: RetryableError HOST_NOT_RESOLVED;
- a refused or dropped connection, a TLS handshake that fails, a malformed answer,
  the time limit: RetryableError FETCH_FAILED;
- a body larger than `max_bytes`: PermanentError RESPONSE_TOO_LARGE. The body is not
  truncated: a cut-off page or JSON document would pass for a whole one, and a
  caller that wants less data asks for it (Range, paging);
- more than `max_redirects` redirects: PermanentError TOO_MANY_REDIRECTS (a Location
  that cannot be read: BAD_REDIRECT).
An HTTP error status (404, 500...) is an answer, not a failure: it is returned.

The body is returned as it came (`Accept-Encoding: identity` is sent, so servers do
not compress it), de-chunked. `timeout` bounds the whole fetch, redirects included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit

import structlog
from google.rpc import code_pb2

from conveyor.kinds.errors import PermanentError, RetryableError
from executor.browser.url_policy import DEFAULT_PORTS, IPAddress, UrlPolicy

log = structlog.get_logger()

USER_AGENT = "Conveyor-fetch/1.0"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Headers the fetch writes itself: a caller may not set them.
MANAGED_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding"})
MAX_HEADER_LINES = 200
#: Longest status, header or chunk-size line (the stream reader's line limit).
MAX_LINE_BYTES = 64 << 10
READ_CHUNK = 64 << 10
CLOSE_TIMEOUT_SECONDS = 2.0


class Headers(Mapping[str, str]):
    """Response headers by lowercase name (looked up in any case); repeated headers
    are joined with ", "."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            values[key] = f"{values[key]}, {value}" if key in values else value
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


@dataclass(frozen=True)
class HttpResponse:
    """A fetched response (satisfies conveyor.kinds.FetchResponse).

    `url` is the final URL (after the redirects followed, without fragment);
    `redirects` the URLs that answered with a redirect on the way, in order."""

    url: str
    status: int
    headers: Headers
    body: bytes
    redirects: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def charset(self) -> str:
        """The charset named in Content-Type, else utf-8."""
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return "utf-8"

    def text(self) -> str:
        """The body decoded by its charset (utf-8 when unnamed or unknown);
        undecodable bytes become U+FFFD."""
        try:
            return self.body.decode(self.charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    request_target: str
    host_header: str


def _target_of(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError as exc:  # a port out of range or not a number
        raise _refused(url, f"unreadable URL: {exc}") from None
    path = parts.path or "/"
    request_target = f"{path}?{parts.query}" if parts.query else path
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS.get(scheme) else f"{shown}:{port}"
    return _Target(url, scheme, host, port, request_target, host_header)


def _refused(url: str, why: str) -> PermanentError:
    return PermanentError(f"fetch of {url[:300]} refused by the URL policy: {why}",
                          reason="URL_POLICY_VIOLATION", code=code_pb2.PERMISSION_DENIED,
                          metadata={"url": url[:300]})


def _failed(url: str, why: str) -> RetryableError:
    return RetryableError(f"fetch of {url[:300]} failed: {why}", reason="FETCH_FAILED", metadata={"url": url[:300]})


def _not_resolved(url: str, why: str) -> RetryableError:
    return RetryableError(f"fetch of {url[:300]}: {why}", reason="HOST_NOT_RESOLVED", metadata={"url": url[:300]})


def _too_large(url: str, max_bytes: int) -> PermanentError:
    return PermanentError(f"the response of {url[:300]} is larger than {max_bytes} bytes",
                          reason="RESPONSE_TOO_LARGE", metadata={"url": url[:300], "max_bytes": str(max_bytes)})


def _request_bytes(target: _Target, headers: Mapping[str, str] | None) -> bytes:
    fields: dict[str, tuple[str, str]] = {
        "user-agent": ("User-Agent", USER_AGENT),
        "accept": ("Accept", "*/*"),
        "accept-encoding": ("Accept-Encoding", "identity"),
    }
    for name, value in (headers or {}).items():
        key = name.strip().lower()
        if key in MANAGED_HEADERS:
            raise ValueError(f"fetch sets the {name} header itself")
        if not key or any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        fields[key] = (name.strip(), value)
    lines = [f"GET {target.request_target} HTTP/1.1", f"Host: {target.host_header}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in fields.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="strict")


async def fetch(
    policy: UrlPolicy,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = 10 << 20,
    follow_redirects: bool = True,
    timeout: float = 30.0,
    max_redirects: int = 10,
) -> HttpResponse:
    """GET `url` (see the module's docstring for what fails how)."""
    if max_bytes < 0 or max_redirects < 0 or timeout <= 0:
        raise ValueError("fetch: max_bytes and max_redirects >= 0, timeout > 0")
    current = urldefrag(url).url
    redirects: list[str] = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while True:
                response = await _fetch_once(policy, current, headers, max_bytes)
                location = response.headers.get("location", "").strip()
                if not (follow_redirects and response.status in REDIRECT_STATUSES and location):
                    break
                if len(redirects) >= max_redirects:
                    raise PermanentError(f"fetch of {url[:300]}: more than {max_redirects} redirects",
                                         reason="TOO_MANY_REDIRECTS", metadata={"url": url[:300]})
                redirects.append(current)
                try:
                    current = urldefrag(urljoin(current, location)).url
                except ValueError:  # e.g. a malformed IPv6 literal
                    raise PermanentError(f"fetch of {current[:300]}: unreadable redirect to {location[:200]!r}",
                                         reason="BAD_REDIRECT", metadata={"url": current[:300]}) from None
                log.debug("http_fetch_redirect", url=redirects[-1], to=current, status=response.status)
    except TimeoutError:
        raise _failed(current, f"no complete answer within {timeout:g}s") from None
    log.debug("http_fetch", url=current, status=response.status, bytes=len(response.body),
              redirects=len(redirects), seconds=round(time.monotonic() - started, 3))
    return HttpResponse(current, response.status, response.headers, response.body, redirects, response.reason)


async def _fetch_once(
    policy: UrlPolicy, url: str, headers: Mapping[str, str] | None, max_bytes: int
) -> HttpResponse:
    """One request, without following a redirect."""
    decision = await policy.check_url(url)
    if decision.unresolved:
        raise _not_resolved(url, decision.reason)
    if not decision.allowed:
        log.info("http_fetch_refused", url=url[:300], reason=decision.reason)
        raise _refused(url, decision.reason)
    target = _target_of(url)
    request = _request_bytes(target, headers)
    addresses = list(decision.addresses)
    if not addresses:  # a host allowed by configuration: resolved (once) by the policy
        try:
            addresses = await policy.resolve(target.host, target.port)
        except (OSError, TimeoutError, ValueError) as exc:
            raise _not_resolved(url, f"{target.host} could not be resolved ({exc or type(exc).__name__})") from None
        if not addresses:
            raise _not_resolved(url, f"{target.host} resolved to no address")
    reader, writer = await _connect(target, addresses)
    try:
        writer.write(request)
        await writer.drain()
        return await _read_response(reader, url, max_bytes)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise _failed(url, f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # a line longer than the reader's limit
        raise _failed(url, f"malformed response: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await writer.wait_closed()


async def _connect(target: _Target, addresses: list[IPAddress]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of the checked addresses that answers."""
    tls: ssl.SSLContext | None = ssl.create_default_context() if target.scheme == "https" else None
    errors: list[str] = []
    for address in addresses:
        try:
            return await asyncio.open_connection(
                str(address), target.port, ssl=tls, server_hostname=target.host if tls else None,
                limit=MAX_LINE_BYTES,
            )
        except OSError as exc:  # ssl.SSLError (certificate refused...) is an OSError too
            errors.append(f"{address}: {exc}")
    raise _failed(target.url, "cannot connect (" + "; ".join(errors) + ")")


async def _read_response(reader: asyncio.StreamReader, url: str, max_bytes: int) -> HttpResponse:
    while True:
        status, reason = await _read_status(reader, url)
        pairs = await _read_headers(reader, url)
        if not 100 <= status < 200:
            break
        # An informational answer (100 Continue, 103 Early Hints): the real one follows.
    headers = Headers(pairs)
    if status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, url, max_bytes)
    elif "content-length" in headers:
        body = await _read_sized(reader, url, headers["content-length"], max_bytes)
    else:
        body = await _read_to_eof(reader, url, max_bytes)
    return HttpResponse(url, status, headers, body, [], reason)


async def _read_status(reader: asyncio.StreamReader, url: str) -> tuple[int, str]:
    line = await reader.readline()
    if not line:
        raise _failed(url, "the server closed the connection without answering")
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise _failed(url, f"malformed status line {line[:100]!r}")
    return int(code), reason.strip()


async def _read_headers(reader: asyncio.StreamReader, url: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for _ in range(MAX_HEADER_LINES):
        line = await reader.readline()
        if not line:
            raise _failed(url, "the connection closed inside the headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return pairs
        if text[0] in " \t" and pairs:  # an obsolete folded continuation line
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise _failed(url, f"malformed header line {text[:100]!r}")
        pairs.append((name.strip(), value.strip()))
    raise _failed(url, f"more than {MAX_HEADER_LINES} header lines")


async def _read_sized(reader: asyncio.StreamReader, url: str, length_header: str, max_bytes: int) -> bytes:
    lengths = {value.strip() for value in length_header.split(",")}
    if len(lengths) != 1 or not (length := lengths.pop()).isdigit():
        raise _failed(url, f"malformed Content-Length {length_header[:100]!r}")
    size = int(length)
    if size > max_bytes:
        raise _too_large(url, max_bytes)
    return await reader.readexactly(size)


async def _read_chunked(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        line = (await reader.readline()).decode("latin-1")
        if not line.endswith("\n"):
            raise _failed(url, "the connection closed inside the chunked body")
        size_text = line.split(";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _failed(url, f"malformed chunk size {size_text[:40]!r}") from None
        if size < 0:
            raise _failed(url, f"malformed chunk size {size_text[:40]!r}")
        if size == 0:
            await _read_headers(reader, url)  # the trailer section, ignored
            return bytes(body)
        if len(body) + size > max_bytes:
            raise _too_large(url, max_bytes)
        body += await reader.readexactly(size)
        if await reader.readline() not in (b"\r\n", b"\n"):
            raise _failed(url, "a chunk does not end with CRLF")


async def _read_to_eof(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    body = bytearray()
    while chunk := await reader.read(READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(url, max_bytes)
    return bytes(body)
