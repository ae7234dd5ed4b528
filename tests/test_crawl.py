"""The built-in `crawl` kind, run for real: its handler with the executor's own
JobContext (executor/kind_context.py: the real `http_fetch.fetch` behind the URL
policy, the real browser pool for render="browser", the real artifact store), against
sites served on loopback that log every request they get.

The site (SiteServer on 127.0.0.1): an index linking to /p1../pN and more, each /pK
linking one level deeper, a robots.txt that disallows /private/ for ConveyorCrawler
(and everything for "*", so a crawler reading the wrong group crawls nothing), a
redirect (/old -> /new), a page that 404s (whose links must not be followed), links
to a second server on 127.0.0.2 (allowed by the URL policy: same_site alone keeps the
crawler off it) and to a name under .invalid.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2

from conveyor.artifacts import LocalArtifactStore
from conveyor.kinds import Kind, PermanentError, RetryableError, default_registry
from conveyor.v1 import job_service_pb2, task_pb2
from executor.browser.pool import BrowserPool
from executor.browser.url_policy import UrlPolicy
from executor.kind_context import ExecutorJobContext, ExecutorServices
from executor.kind_runner import run_kind
from executor.kinds.crawl import CrawlInput
from tests.browser.helpers import make_settings, new_job_id

ROBOTS = """\
User-agent: *
Disallow: /

User-agent: ConveyorCrawler
Disallow: /private/
Allow: /
"""


@dataclass(frozen=True)
class Reply:
    status: int
    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None


def html(title: str, *hrefs: str, body: str = "", head: str = "") -> Reply:
    links = "".join(f'<li><a href="{href}">{href}</a></li>' for href in hrefs)
    return Reply(200, f"<!doctype html><html><head><title>{title}</title>{head}</head>"
                      f"<body>{body}<ul>{links}</ul></body></html>")


def build_site(n: int, other: str, *, scripted: bool = False) -> dict[str, Reply]:
    """The site's pages by path (see the module's docstring)."""
    head = ""
    if scripted:  # what only a browser sees: a link and a title made by script
        head = ("<script>document.addEventListener('DOMContentLoaded', () => {"
                "const a = document.createElement('a'); a.href = '/js-only'; a.textContent = 'js';"
                "document.body.appendChild(a); document.title = 'Index (rendered)';"
                "document.querySelector('h1.headline').textContent = 'Rendered welcome'; });</script>")
    site: dict[str, Reply] = {
        "/robots.txt": Reply(200, ROBOTS, "text/plain"),
        "/": html("Index", *(f"/p{k}" for k in range(1, n + 1)), "/private/", "/private/secret.html", "/old",
                  "/missing", f"{other}/from-a", "http://other.invalid/nowhere", "mailto:someone@example.com",
                  "#top", "/p1#part", "/p2?x=1", f"HTTP://127.0.0.1:{{port}}/p{n}", "javascript:void(0)",
                  body='<h1 class="headline">  Welcome\n home </h1>', head=head),
        "/old": Reply(301, "moved", "text/plain", location="/new"),
        "/new": html("New", "/p1", "/new-only"),
        "/new-only": html("New only"),
        "/missing": Reply(404, '<html><body><a href="/from-404">never followed</a></body></html>'),
        "/private/": html("Private", "/private/deeper"),
        "/private/secret.html": html("Secret"),
        "/js-only": html("Made by script"),
        "/p2?x=1": html("Page 2 with a query"),
    }
    for k in range(1, n + 1):
        site[f"/p{k}"] = html(f"Page {k}", "/", f"/p{k}/a", f"/p{k % n + 1}", f"/private/p{k}",
                              body=f'<p>Price: <span class="price">{k}.00</span></p>')
        site[f"/p{k}/a"] = html(f"Page {k} a", f"/p{k}/a/b")
        site[f"/p{k}/a/b"] = html(f"Page {k} a b", f"/p{k}/a/b/c")
    return site


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SiteServer

    def do_GET(self) -> None:
        self.server.record(self.path)
        reply = self.server.pages.get(self.path, Reply(404, "<p>no such page</p>"))
        body = reply.body.replace("{port}", str(self.server.port)).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        if reply.location:
            self.send_header("Location", reply.location)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SiteServer(http.server.ThreadingHTTPServer):
    """Serves `pages` on a loopback address; logs every request path, with its time."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.port = int(self.server_address[1])
        self.base = f"http://{host}:{self.port}"
        self.pages: dict[str, Reply] = {}
        self.log: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def record(self, path: str) -> None:
        with self._lock:
            self.log.append((time.monotonic(), path))

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path in self.log]

    def __enter__(self) -> SiteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def other() -> Iterator[SiteServer]:
    """The other host: every request it gets is a crawler that left the site."""
    with SiteServer("127.0.0.2") as server:
        server.pages = {"/from-a": html("Other host", "/elsewhere")}
        yield server


@pytest.fixture
def site(other: SiteServer) -> Iterator[SiteServer]:
    with SiteServer() as server:
        server.pages = build_site(30, other.base)
        yield server


@pytest.fixture(scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserPool]:
    data = tmp_path_factory.mktemp("crawl-browser")
    async with BrowserPool(make_settings(data, allowed_hosts=["127.0.0.1"]), run_dir=data / "browsers") as shared:
        yield shared


@dataclass
class Job:
    """One run of the crawl kind through the executor's JobContext."""

    tmp: Path
    policy: UrlPolicy = field(default_factory=lambda: UrlPolicy(["127.0.0.1", "127.0.0.2"]))
    pool: BrowserPool | None = None
    progress: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        kind = default_registry.get("crawl")
        assert isinstance(kind, Kind) and kind.browser
        self.kind = kind
        self.store = LocalArtifactStore(self.tmp / "artifacts")
        self.ctx = ExecutorJobContext(
            job_id=new_job_id(), attempt=1, queue="default", labels={}, kind=kind,
            services=ExecutorServices(artifacts=self.store, policy=self.policy, max_artifact_bytes=64 << 20,
                                      pool=self.pool),
            report=self._report,
        )

    async def _report(self, percent: int, message: str, step_index: int, step_name: str) -> None:
        self.progress.append((percent, message))

    async def run(self, **input: Any) -> dict[str, Any]:
        output = await self.kind.handler(self.ctx, self.kind.parse_input(input))
        decoded: dict[str, Any] = json.loads(json.dumps(output))  # JSON, as on the wire
        return decoded

    def artifact(self) -> Any:
        [saved] = self.ctx.artifacts
        assert (saved.content_type, saved.name) == ("application/json", "pages-1.json")
        return json.loads((self.store.root / self.ctx.job_id / saved.name).read_text())


def assert_never_twice(paths: list[str]) -> None:
    twice = {path: n for path, n in Counter(paths).items() if n > 1}
    assert not twice, f"requested more than once: {twice}"


async def test_http_crawl_of_a_site(site: SiteServer, other: SiteServer, tmp_path: Path) -> None:
    job = Job(tmp_path)
    out = await job.run(startUrls=[site.base + "/"], maxPages=1000, maxDepth=2,
                        extract={"headline": "h1.headline", "price": "span.price"})
    n = 30
    expected = {"/robots.txt", "/", "/old", "/new", "/missing", "/p2?x=1", "/new-only",
                *(f"/p{k}" for k in range(1, n + 1)), *(f"/p{k}/a" for k in range(1, n + 1))}
    paths = site.paths
    assert_never_twice(paths)
    assert set(paths) == expected  # depth 3 (/pK/a/b), /private/, the 404's link: never requested
    assert not [p for p in paths if p.startswith("/private")]
    assert other.paths == []
    # The output lists every page it fetched (robots.txt is no page), first the index.
    pages = out["pages"]
    assert pages[0]["url"] == site.base + "/"
    assert sorted(p["url"] for p in pages) == sorted(site.base + path for path in expected - {"/robots.txt"})
    assert out["pagesCrawled"] == len(pages) == len(expected) - 1
    by_path = {p["url"].removeprefix(site.base): p for p in pages}
    index = by_path["/"]
    assert (index["status"], index["title"], index["depth"]) == (200, "Index", 0)
    assert index["values"] == {"headline": "Welcome home", "price": None}
    assert site.base + "/p1" in index["links"] and site.base + "/private/secret.html" in index["links"]
    assert other.base + "/from-a" in index["links"]
    assert len(index["links"]) == len(set(index["links"]))  # /p1#part, HTTP://.../p30 are the same pages
    assert not [link for link in index["links"] if not link.startswith("http")]  # no mailto:, javascript:
    assert by_path["/p7"]["values"] == {"headline": None, "price": "7.00"}
    assert (by_path["/p7"]["depth"], by_path["/p7/a"]["depth"]) == (1, 2)
    assert (by_path["/missing"]["status"], by_path["/missing"]["links"]) == (404, [])
    assert by_path["/old"]["status"] == 301 and by_path["/old"]["redirectTo"] == site.base + "/new"
    assert (by_path["/new"]["status"], by_path["/new"]["title"], by_path["/new"]["depth"]) == (200, "New", 1)
    skipped = out["skipped"]
    assert sorted(skipped["robots"]) == sorted(
        [site.base + "/private/", site.base + "/private/secret.html"]
        + [site.base + f"/private/p{k}" for k in range(1, n + 1)])
    assert skipped["offsite"] == 2  # the other host and other.invalid, each counted once
    assert skipped["errors"] == []
    # Progress after each page, and the pages kept as an artifact.
    assert [m for _, m in job.progress] == [f"page {i} of 1000" for i in range(1, len(pages) + 1)]
    assert [p for p, _ in job.progress] == sorted(p for p, _ in job.progress)
    assert job.artifact() == pages


async def test_max_pages_is_held(site: SiteServer, tmp_path: Path) -> None:
    job = Job(tmp_path)
    out = await job.run(start_urls=[site.base + "/"], max_pages=10)
    paths = site.paths
    assert paths[0] == "/robots.txt" and len(paths) == 11
    assert_never_twice(paths)
    assert out["pagesCrawled"] == 10
    assert [p["url"] for p in out["pages"]] == [site.base + path for path in paths[1:]]
    assert job.progress[-1] == (99, "page 10 of 10")


async def test_max_depth_zero_and_include_exclude(site: SiteServer, tmp_path: Path) -> None:
    only_start = await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=0)
    assert [p["url"] for p in only_start["pages"]] == [site.base + "/"]
    site.log.clear()
    out = await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=1,
                                  include=[r"/p\d+$", r"/old$", r"/new$"], exclude=[r"/p1\d$"])
    fetched = {p["url"].removeprefix(site.base) for p in out["pages"]}
    assert fetched == {"/", "/old", "/new", *(f"/p{k}" for k in range(1, 31) if not 10 <= k <= 19)}
    assert set(site.paths) == fetched | {"/robots.txt"}
    assert out["skipped"]["excluded"] > 10


async def test_robots_ignored_when_asked(site: SiteServer, tmp_path: Path) -> None:
    out = await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=1, respectRobots=False)
    assert "/robots.txt" not in site.paths
    assert {"/private/", "/private/secret.html"} <= set(site.paths)
    assert out["skipped"]["robots"] == []


async def test_other_hosts_when_not_same_site(site: SiteServer, other: SiteServer, tmp_path: Path) -> None:
    out = await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=1, sameSite=False)
    assert other.paths == ["/robots.txt", "/from-a"]  # robots.txt per host, once
    assert_never_twice(site.paths)
    [error] = out["skipped"]["errors"]
    assert (error["url"], error["reason"]) == ("http://other.invalid/nowhere", "HOST_NOT_RESOLVED")
    assert out["skipped"]["offsite"] == 0


async def test_politeness_delay_per_host(site: SiteServer, tmp_path: Path) -> None:
    site.pages = build_site(3, "http://other.invalid")
    await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=1, maxPages=4, delaySeconds=0.25)
    times = [t for t, _ in site.log]
    assert len(times) == 5  # robots.txt and 4 pages
    gaps = [b - a for a, b in pairwise(times)]
    # Counted from the end of each request, the host sees the whole delay between two
    # (whatever a connection's set-up took; the timer may fire a hair early).
    assert min(gaps) >= 0.25 - 0.005, gaps


async def test_start_url_refused_by_the_url_policy(other: SiteServer, tmp_path: Path) -> None:
    for robots in (True, False):
        job = Job(tmp_path, policy=UrlPolicy(["127.0.0.1"]))  # 127.0.0.2 is loopback, not allowed
        with pytest.raises(PermanentError) as caught:
            await job.run(startUrls=[other.base + "/from-a"], respectRobots=robots)
        assert (caught.value.reason, caught.value.code) == ("URL_POLICY_VIOLATION", code_pb2.PERMISSION_DENIED)
    assert other.paths == []


async def test_start_url_not_resolved_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(RetryableError) as caught:
        await Job(tmp_path).run(startUrls=["http://start.invalid/"])
    assert caught.value.reason == "HOST_NOT_RESOLVED"


async def test_through_the_kind_runner_json_in_and_out(site: SiteServer, tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = struct_pb2.Struct()
    data.update({"startUrls": [site.base + "/"], "maxDepth": 0})
    spec = job_service_pb2.SubmitJobRequest(kind=task_pb2.KindTask(name="crawl", input=data))
    result = await run_kind(job.kind, job.ctx, spec)
    output = json_format.MessageToDict(result.output)
    assert output["pagesCrawled"] == 1 and output["pages"][0]["status"] == 200
    assert [a.name for a in result.artifacts] == ["pages-1.json"]


async def test_browser_render(site: SiteServer, other: SiteServer, pool: BrowserPool, tmp_path: Path) -> None:
    site.pages = build_site(4, other.base, scripted=True)
    job = Job(tmp_path, pool=pool)
    out = await job.run(startUrls=[site.base + "/"], render="browser", maxDepth=1,
                        extract={"headline": "h1.headline", "price": "li > a"})
    paths = site.paths
    assert_never_twice(paths)  # the crawler's fetch is the document's only request
    assert set(paths) == {"/robots.txt", "/", "/js-only", "/old", "/new", "/missing", "/p2?x=1",
                          "/p1", "/p2", "/p3", "/p4"}
    assert other.paths == []
    by_path = {p["url"].removeprefix(site.base): p for p in out["pages"]}
    index = by_path["/"]
    assert index["title"] == "Index (rendered)"  # read from the DOM, after the page's script ran
    assert index["values"] == {"headline": "Rendered welcome", "price": "/p1"}
    assert site.base + "/js-only" in index["links"]
    assert by_path["/js-only"]["title"] == "Made by script"
    assert by_path["/missing"]["status"] == 404 and by_path["/old"]["redirectTo"] == site.base + "/new"
    assert sorted(out["skipped"]["robots"]) == sorted([site.base + "/private/", site.base + "/private/secret.html"])
    assert job.artifact() == out["pages"]
    # In plain HTTP the script's link does not exist.
    site.log.clear()
    plain = await Job(tmp_path).run(startUrls=[site.base + "/"], maxDepth=1)
    assert "/js-only" not in site.paths
    assert {p["url"] for p in plain["pages"]} == {p["url"] for p in out["pages"]} - {site.base + "/js-only"}


def test_input_forms_and_refusals() -> None:
    camel = CrawlInput.model_validate({"startUrls": ["HTTP://Example.COM:80/a#f"], "maxPages": 5,
                                       "sameSite": False, "delaySeconds": 1.5})
    snake = CrawlInput.model_validate({"start_urls": ["http://example.com/a"], "max_pages": 5,
                                       "same_site": False, "delay_seconds": 1.5})
    assert camel == snake and camel.start_urls == ["http://example.com/a"]
    schema = CrawlInput.model_json_schema()
    assert {"startUrls", "maxPages", "maxDepth", "respectRobots"} <= set(schema["properties"])
    assert schema["required"] == ["startUrls"]
    refused: list[dict[str, Any]] = [
        {"startUrls": []},
        {"startUrls": ["ftp://example.com/"]},
        {"startUrls": ["http://example.com/"], "maxPages": 0},
        {"startUrls": ["http://example.com/"], "maxPages": 10_001},
        {"startUrls": ["http://example.com/"], "maxDepth": 51},
        {"startUrls": ["http://example.com/"], "include": ["("]},
        {"startUrls": ["http://example.com/"], "render": "pdf"},
        {"startUrls": ["http://example.com/"], "extract": {"x": "div > p"}},  # not simple: http mode
    ]
    for data in refused:
        with pytest.raises(ValueError):
            CrawlInput.model_validate(data)
    CrawlInput.model_validate({"startUrls": ["http://example.com/"], "render": "browser",
                               "extract": {"x": "div > p"}})
