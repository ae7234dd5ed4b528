"""The built-in `crawl` kind: a site, breadth first, from its start URLs. Written with
the public kind API only (conveyor.kinds: ctx.fetch, ctx.browser_page, ctx.progress,
ctx.save_artifact), as any user's kind would be.

- Pages are fetched with `ctx.fetch` (every connection through the executor's URL
  policy), one at a time, `delay_seconds` apart per host (from the end of one request
  to the start of the next). Redirects are followed by the crawler itself, hop by
  hop, so that each target meets the same rules as a link (same site,
  include/exclude, robots.txt, never twice): a redirect is listed as a page of its
  own (its status and `redirectTo`), its target is crawled next.
- `render="browser"`: the document fetched so is rendered in a page of the browser
  pool (the page's main-frame navigation is answered with it, so it is requested
  once; its scripts, styles and other subresources load through the pool's URL
  policy), and title, links and extracted values are read from the DOM after `load`.
- `max_pages` bounds the page requests made (redirect hops included; robots.txt is
  not a page). `max_depth` counts link hops from a start URL; a redirect does not add
  one. Only 2xx HTML pages are read for links: a 404 is listed with its status.
- `same_site`: only links to the hosts and ports of the start URLs (and of where a
  start URL redirects to). `include`/`exclude` are regular expressions searched in a
  discovered URL (start URLs are crawled as given).
- robots.txt (RFC 9309) is fetched once per origin: 2xx is obeyed for the user agent
  "ConveyorCrawler" (else "*"), 4xx allows everything, 5xx disallows everything; a
  robots.txt that cannot be fetched at all makes that origin's pages errors.
- URLs are compared normalized: no fragment, no user info, lowercase scheme and
  host, no default port, "/" for an empty path.

A start URL the URL policy refuses fails the job (PermanentError
URL_POLICY_VIOLATION); so does a crawl that got no page at all (with the first error
it met: retried if that one is retryable). Otherwise failed pages are listed in
`skipped.errors` and the crawl goes on.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from conveyor.kinds import FetchResponse, JobContext, JobError, PermanentError, Retry, RetryableError, job_kind

ROBOTS_AGENT = "ConveyorCrawler"
USER_AGENT = "ConveyorCrawler/1.0"
ROBOTS_MAX_BYTES = 512 << 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = ("text/html", "application/xhtml+xml")
DEFAULT_PORTS = {"http": 80, "https": 443}
POLICY_VIOLATION = "URL_POLICY_VIOLATION"
RENDER_TIMEOUT_MS = 30_000
#: Response headers not handed to the browser with a rendered document (the body is
#: already de-chunked and its length is the browser's to compute).
HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"})


# --- input ----------------------------------------------------------------------------


class CrawlInput(BaseModel):
    """A crawl: where to start, how far to go, what to keep of each page."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, alias_generator=to_camel)

    start_urls: list[str] = Field(min_length=1, max_length=100, description="http(s) URLs to start from")
    max_pages: int = Field(100, ge=1, le=10_000, description="page requests at most")
    max_depth: int = Field(3, ge=0, le=50, description="link hops from a start URL")
    same_site: bool = Field(True, description="only the start URLs' hosts and ports")
    include: list[str] = Field(default_factory=list, max_length=100, description="URL regexes; empty: all")
    exclude: list[str] = Field(default_factory=list, max_length=100, description="URL regexes to leave out")
    respect_robots: bool = True
    render: Literal["http", "browser"] = "http"
    extract: dict[str, str] = Field(default_factory=dict, max_length=100,
                                    description="key -> CSS selector: the text of its first match on each page")
    delay_seconds: float = Field(0.0, ge=0, le=60, description="between two requests to one host")

    @field_validator("start_urls")
    @classmethod
    def _start_urls(cls, urls: list[str]) -> list[str]:
        normalized = []
        for url in urls:
            canonical = normalize_url(url)
            if canonical is None:
                raise ValueError(f"not an http(s) URL: {url[:200]!r}")
            normalized.append(canonical)
        return normalized

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
        return patterns

    @model_validator(mode="after")
    def _selectors(self) -> CrawlInput:
        for key, selector in self.extract.items():
            if not key:
                raise ValueError("extract: keys must not be empty")
            if self.render == "http":
                parse_selector(selector)  # the browser takes any CSS; plain HTTP a simple one
        return self


# --- URLs -----------------------------------------------------------------------------


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The URL (resolved against `base`) in the form the crawl compares, or None if
    it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def site_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 0)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- reading HTML with the standard library ---------------------------------------------


@dataclass(frozen=True)
class SimpleSelector:
    """`tag`, `#id`, `.class`, or a combination such as `tag.class` or `div#main.wide`."""

    tag: str | None = None
    id: str | None = None
    classes: frozenset[str] = frozenset()

    def matches(self, tag: str, attrs: Mapping[str, str | None]) -> bool:
        if self.tag is not None and tag != self.tag:
            return False
        if self.id is not None and attrs.get("id") != self.id:
            return False
        return self.classes <= set((attrs.get("class") or "").split())


_SELECTOR = re.compile(r"^(?P<tag>[a-zA-Z][a-zA-Z0-9-]*)?(?P<rest>(?:[#.][A-Za-z_-][\w-]*)*)$")
_SELECTOR_PART = re.compile(r"([#.])([A-Za-z_-][\w-]*)")


def parse_selector(text: str) -> SimpleSelector:
    match = _SELECTOR.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"selector {text!r}: with render 'http', only tag, #id, .class and tag.class forms")
    ids = [name for mark, name in _SELECTOR_PART.findall(match["rest"]) if mark == "#"]
    if len(ids) > 1:
        raise ValueError(f"selector {text!r} names two ids")
    classes = frozenset(name for mark, name in _SELECTOR_PART.findall(match["rest"]) if mark == ".")
    tag = match["tag"].lower() if match["tag"] else None
    return SimpleSelector(tag, ids[0] if ids else None, classes)


#: Elements that have no end tag (and so no content).
VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                           "param", "source", "track", "wbr"})


def collapse(text: str) -> str:
    return " ".join(text.split())


class PageParser(HTMLParser):
    """A page's title, `<base href>`, link hrefs (a and area) and, per selector, the
    text of its first matching element (its text content, whitespace collapsed)."""

    def __init__(self, selectors: Mapping[str, SimpleSelector]) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.base: str | None = None
        self.hrefs: list[str] = []
        self.values: dict[str, str | None] = dict.fromkeys(selectors)
        self._pending = dict(selectors)
        self._title_parts: list[str] | None = None
        self._open: list[str] = []
        self._capturing: dict[str, tuple[int, list[str]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, dict(attrs), void=tag in VOID_ELEMENTS)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, dict(attrs), void=True)

    def _start(self, tag: str, attrs: dict[str, str | None], *, void: bool) -> None:
        href = attrs.get("href")
        if tag == "base" and self.base is None and href:
            self.base = href
        elif tag in ("a", "area") and href is not None:
            self.hrefs.append(href)
        elif tag == "title" and self.title is None and not void:
            self._title_parts = []
        for key, selector in list(self._pending.items()):
            if selector.matches(tag, attrs):
                del self._pending[key]
                if void:
                    self.values[key] = ""
                else:
                    self._capturing[key] = (len(self._open), [])
        if not void:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_parts is not None:
            self.title, self._title_parts = collapse("".join(self._title_parts)), None
        if tag not in self._open:
            return  # a stray end tag
        while self._open.pop() != tag:
            pass  # elements left open inside it end with it
        for key, (depth, parts) in list(self._capturing.items()):
            if depth >= len(self._open):
                self.values[key] = collapse("".join(parts))
                del self._capturing[key]

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None:
            self._title_parts.append(data)
        for _depth, parts in self._capturing.values():
            parts.append(data)

    def close(self) -> None:
        super().close()
        if self._title_parts is not None:
            self.title = collapse("".join(self._title_parts))
        for key, (_depth, parts) in self._capturing.items():
            self.values[key] = collapse("".join(parts))
        self._capturing.clear()


@dataclass
class PageContent:
    title: str | None
    links: list[str]
    values: dict[str, str | None]


def read_html(text: str, url: str, selectors: Mapping[str, SimpleSelector]) -> PageContent:
    parser = PageParser(selectors)
    parser.feed(text)
    parser.close()
    base = urljoin(url, parser.base) if parser.base else url
    return PageContent(parser.title, unique_links(parser.hrefs, base), parser.values)


def unique_links(hrefs: list[str], base: str) -> list[str]:
    links: dict[str, None] = {}
    for href in hrefs:
        link = normalize_url(href, base)
        if link is not None:
            links[link] = None
    return list(links)


def is_html(response: FetchResponse) -> bool:
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type:
        return content_type in HTML_TYPES
    return response.body.lstrip()[:1] == b"<"


# --- rendering in the browser ---------------------------------------------------------------


class BrowserRenderer:
    """Renders fetched documents in one page of the browser pool: the page's next
    main-frame navigation is answered with the document (so the crawler's fetch is
    its only request), any other main-frame navigation (a script sending the page
    elsewhere) is refused, and everything else goes on to the pool's URL policy."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self._document: FetchResponse | None = None

    async def install(self) -> None:
        await self.page.route("**/*", self._route)

    async def _route(self, route: Any) -> None:
        from playwright.async_api import Error as PlaywrightError

        request = route.request
        try:
            if not (request.is_navigation_request() and request.frame.parent_frame is None):
                await route.fallback()
                return
            document, self._document = self._document, None
            if document is None:
                await route.abort("blockedbyclient")
                return
            headers = {k: v for k, v in document.headers.items() if k.lower() not in HOP_HEADERS}
            await route.fulfill(status=document.status, headers=headers, body=document.body)
        except PlaywrightError:
            pass  # the page closed meanwhile

    async def render(self, document: FetchResponse, extract: Mapping[str, str]) -> PageContent:
        from playwright.async_api import Error as PlaywrightError

        self._document = document
        try:
            await self.page.goto(document.url, wait_until="load", timeout=RENDER_TIMEOUT_MS)
            title = str(await self.page.title())
            hrefs = await self.page.eval_on_selector_all("a[href], area[href]", "els => els.map(e => e.href)")
            values: dict[str, str | None] = {}
            for key, selector in extract.items():
                text = await self.page.evaluate(
                    "s => { const e = document.querySelector(s); return e ? e.textContent : null }", selector)
                values[key] = collapse(str(text)) if text is not None else None
        except PlaywrightError as exc:
            if "querySelector" in str(exc) and "valid selector" in str(exc):
                raise PermanentError(f"extract: {exc}".splitlines()[0], reason="INVALID_SELECTOR") from None
            raise RetryableError(f"rendering {document.url[:300]} failed: {str(exc).splitlines()[0]}",
                                 reason="RENDER_FAILED", metadata={"url": document.url[:300]}) from None
        finally:
            self._document = None
        return PageContent(collapse(title) or None, unique_links([str(h) for h in hrefs], document.url), values)


# --- the crawl ----------------------------------------------------------------------------------


@dataclass
class _Queued:
    url: str
    depth: int
    start: bool = False


@dataclass
class Crawl:
    ctx: JobContext
    input: CrawlInput
    renderer: BrowserRenderer | None = None
    pages: list[dict[str, Any]] = field(default_factory=list)
    queue: deque[_Queued] = field(default_factory=deque)
    seen: set[str] = field(default_factory=set)
    sites: set[tuple[str, int]] = field(default_factory=set)
    robots: dict[str, RobotFileParser | JobError] = field(default_factory=dict)
    skipped_robots: list[str] = field(default_factory=list)
    offsite: int = 0
    excluded: int = 0
    errors: list[tuple[str, JobError]] = field(default_factory=list)
    requests: int = 0
    _last_request: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._include = [re.compile(p) for p in self.input.include]
        self._exclude = [re.compile(p) for p in self.input.exclude]
        self._selectors = ({k: parse_selector(s) for k, s in self.input.extract.items()}
                           if self.input.render == "http" else {})

    # -- what gets crawled --

    def admit(self, url: str, depth: int, *, start: bool = False, front: bool = False) -> None:
        """Queue a URL met for the first time, unless a rule leaves it out."""
        if url in self.seen:
            return
        self.seen.add(url)
        if not start:
            if self.input.same_site and site_of(url) not in self.sites:
                self.offsite += 1
                return
            if (self._include and not any(p.search(url) for p in self._include)) or any(
                p.search(url) for p in self._exclude
            ):
                self.excluded += 1
                return
        if front:
            self.queue.appendleft(_Queued(url, depth, start))
        else:
            self.queue.append(_Queued(url, depth, start))

    async def run(self) -> dict[str, Any]:
        self.sites = {site_of(url) for url in self.input.start_urls}
        for url in self.input.start_urls:
            self.admit(url, 0, start=True)
        max_pages = self.input.max_pages
        while self.queue and self.requests < max_pages:
            item = self.queue.popleft()
            try:
                if self.input.respect_robots and not await self.robots_allow(item.url):
                    self.skipped_robots.append(item.url)
                    continue
                async with self.polite(item.url):
                    self.requests += 1
                    page = await self.crawl_page(item)
                self.pages.append(page)
            except JobError as exc:
                if item.start and exc.reason == POLICY_VIOLATION:
                    raise
                self.errors.append((item.url, exc))
                self.ctx.log.info("crawl_page_failed", url=item.url, reason=exc.reason, error=exc.message)
            await self.ctx.progress(min(99, self.requests * 100 // max_pages), f"page {self.requests} of {max_pages}")
        if not self.pages and self.errors:
            raise self.errors[0][1]
        await self.ctx.save_artifact(json.dumps(self.pages, indent=1).encode(),
                                     content_type="application/json", label="pages")
        self.ctx.log.info("crawl_done", pages=len(self.pages), requests=self.requests, errors=len(self.errors),
                          robots=len(self.skipped_robots), offsite=self.offsite, excluded=self.excluded)
        return {
            "pages": self.pages,
            "pagesCrawled": len(self.pages),
            "skipped": {
                "robots": self.skipped_robots,
                "offsite": self.offsite,
                "excluded": self.excluded,
                "errors": [{"url": url, "reason": e.reason, "message": e.message} for url, e in self.errors],
            },
        }

    @asynccontextmanager
    async def polite(self, url: str) -> AsyncIterator[None]:
        """Around one request to the url's host: first wait until `delay_seconds` have
        passed since the last request to the host ended (counted from its end, so the
        host sees the gap whatever the connection's set-up took)."""
        host = urlsplit(url).netloc
        delay = self.input.delay_seconds
        last = self._last_request.get(host)
        if delay and last is not None and (wait := last + delay - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        try:
            yield
        finally:
            self._last_request[host] = time.monotonic()

    # -- one page --

    async def crawl_page(self, item: _Queued) -> dict[str, Any]:
        response = await self.ctx.fetch(item.url, headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        page: dict[str, Any] = {"url": item.url, "status": response.status, "title": None, "depth": item.depth,
                                "links": [], "values": dict.fromkeys(self.input.extract)}
        location = response.headers.get("location", "").strip()
        if response.status in REDIRECT_STATUSES and location:
            target = normalize_url(location, item.url)
            page["redirectTo"] = target
            if target is not None:
                if item.start:  # where the site asked for lives is the site
                    self.sites.add(site_of(target))
                self.admit(target, item.depth, front=True)
        elif 200 <= response.status < 300 and is_html(response):
            if self.renderer is not None:
                content = await self.renderer.render(response, self.input.extract)
            else:
                content = read_html(response.text(), item.url, self._selectors)
            page.update(title=content.title, links=content.links, values=content.values)
            if item.depth < self.input.max_depth:
                for link in content.links:
                    self.admit(link, item.depth + 1)
        self.ctx.log.debug("crawl_page", url=item.url, status=response.status, depth=item.depth,
                           links=len(page["links"]))
        return page

    # -- robots.txt --

    async def robots_allow(self, url: str) -> bool:
        origin = origin_of(url)
        rules = self.robots.get(origin)
        if rules is None:
            rules = self.robots[origin] = await self.fetch_robots(origin)
        if isinstance(rules, JobError):
            raise rules
        return rules.can_fetch(ROBOTS_AGENT, url)

    async def fetch_robots(self, origin: str) -> RobotFileParser | JobError:
        rules = RobotFileParser(f"{origin}/robots.txt")
        try:
            async with self.polite(origin + "/"):
                response = await self.ctx.fetch(f"{origin}/robots.txt", headers={"User-Agent": USER_AGENT},
                                                max_bytes=ROBOTS_MAX_BYTES)
        except JobError as exc:  # its message names the robots.txt URL
            self.ctx.log.info("crawl_robots_unavailable", origin=origin, reason=exc.reason)
            return exc
        if 200 <= response.status < 300:
            rules.parse(response.text().splitlines())
        elif response.status >= 500:  # unreachable: assume everything disallowed (RFC 9309 2.3.1.4)
            rules.parse(["User-agent: *", "Disallow: /"])
        else:  # 4xx (or another answer): no rules at all
            rules.parse([])
        return rules


@job_kind("crawl", input=CrawlInput, browser=True, retry=Retry(attempts=3, base="2s", max="30s"), timeout="30m")
async def crawl(ctx: JobContext, input: CrawlInput) -> dict[str, Any]:
    """Crawls a site from start URLs (plain HTTP or rendered in the browser): title,
    status, links and extracted values of each page, robots.txt honoured."""
    page_context: AbstractAsyncContextManager[Any] = (
        ctx.browser_page() if input.render == "browser" else nullcontext(None)
    )
    async with page_context as page:
        renderer = None
        if page is not None:
            renderer = BrowserRenderer(page)
            await renderer.install()
        return await Crawl(ctx, input, renderer).run()
