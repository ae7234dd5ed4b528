"""The public API of job kinds: what a user writes to bring a kind of job of their own.

    from pydantic import BaseModel
    from conveyor.kinds import JobContext, Retry, job_kind

    class ScrapeInput(BaseModel):
        url: str
        max_pages: int = 10

    @job_kind("scrape-website", input=ScrapeInput, retry=Retry(attempts=3, base="2s", max="30s"))
    async def scrape(ctx: JobContext, input: ScrapeInput) -> dict:
        await ctx.progress(10, "Starting scrape...")
        return {"pagesProcessed": 12}

A kind is a name, an input model (pydantic: its JSON Schema is what the gateway
validates a job's input against), a handler (async, or plain blocking code, which runs
on a thread of its own), and its defaults (retry policy, time limit). The handler gets
a JobContext (a BlockingJobContext for blocking code) and the parsed input, and
returns what becomes the job's `result.output` (anything JSON: a dict, a list, a
pydantic model). It fails with RetryableError or PermanentError, or any exception
(retried). An executor serves the kinds of the modules named in CONVEYOR_KINDS (and
of the `conveyor.kinds` entry points); see conveyor/kinds/registry.py.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

#: A kind's name: what jobs name in {"kind": {"name": ...}} (and the built-ins' oneof
#: field names, "noop" and "browser").
KIND_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds_of(value: float | str) -> float:
    """Seconds from a number or a text such as "2s", "500ms", "1.5m", "1h"."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (say e.g. '2s', '500ms', '1m')")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Retry:
    """A kind's retry policy: attempts in all, and the backoff between them
    (exponential: base, 2 x base, ... up to max; fixed: base every time; with ±20 %
    jitter). `on` lists the exception types that are retried (default: every one but
    a PermanentError)."""

    attempts: int = 3
    backoff: Literal["exponential", "fixed"] = "exponential"
    base: float | str = 2.0
    max: float | str = 300.0
    jitter: float = 0.2
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 100:
            raise ValueError("Retry.attempts must be between 1 and 100")
        if self.backoff not in ("exponential", "fixed"):
            raise ValueError("Retry.backoff is 'exponential' or 'fixed'")
        if seconds_of(self.base) < 0 or seconds_of(self.max) < seconds_of(self.base):
            raise ValueError("Retry: 0 <= base <= max")

    @property
    def base_seconds(self) -> float:
        return seconds_of(self.base)

    @property
    def max_seconds(self) -> float:
        return seconds_of(self.max)

    def retries(self, exc: BaseException) -> bool:
        return isinstance(exc, self.on)


class FetchResponse(Protocol):
    """What `fetch` answers: the final URL (after redirects), status, headers
    (lowercase names), body, and the URLs that redirected, in order."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    redirects: list[str]

    def text(self) -> str: ...


class JobContext(Protocol):
    """What an async handler gets besides its input."""

    job_id: str
    attempt: int
    queue: str
    labels: Mapping[str, str]
    #: structlog, with job_id, queue, attempt and kind bound.
    log: Any

    async def progress(self, percent: int, message: str = "") -> None:
        """Report progress (0..100) with a message; watchers see it at once."""

    async def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str:
        """Keep a file with the job; returns its artifact name."""

    async def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
                    follow_redirects: bool = True) -> FetchResponse:
        """GET `url` over plain HTTP(S), every connection (redirects too) through the
        executor's URL policy."""

    def browser_page(self) -> AbstractAsyncContextManager[Any]:
        """A Playwright page of a fresh context from the executor's browser pool (URL
        policy installed), closed on exit. Only for kinds declared `browser=True`."""

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (the handler's task is cancelled too)."""


class BlockingJobContext(Protocol):
    """What a blocking (plain `def`) handler gets: the same, as blocking calls. On
    cancel or time-out, JobCancelled is raised inside the handler's thread."""

    job_id: str
    attempt: int
    queue: str
    labels: Mapping[str, str]
    log: Any

    def progress(self, percent: int, message: str = "") -> None: ...

    def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str: ...

    def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
              follow_redirects: bool = True) -> FetchResponse: ...

    @property
    def cancelled(self) -> bool: ...

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled (for code that polls)."""


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Kind:
    """A registered kind. `typed` is for the built-in kinds whose input is a message
    of the contract (the SubmitJobRequest oneof field of that name) rather than JSON."""

    name: str
    handler: Handler
    input_model: type[BaseModel] | None = None
    retry: Retry | None = None
    timeout_seconds: float | None = None
    browser: bool = False
    typed: bool = False
    description: str = ""
    module: str = field(default="")

    @property
    def blocking(self) -> bool:
        return not inspect.iscoroutinefunction(self.handler)

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema a job's input must meet ({} accepts any object)."""
        if self.input_model is None:
            return {"type": "object"}
        return self.input_model.model_json_schema()

    def parse_input(self, data: Any) -> Any:
        return self.input_model.model_validate(data) if self.input_model is not None else data


def job_kind(
    name: str,
    *,
    input: type[BaseModel] | None = None,
    retry: Retry | None = None,
    timeout: float | str | None = None,
    browser: bool = False,
    registry: Any = None,
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of kind `name` (in the default
    registry, or `registry`). The function is returned as it is."""
    from conveyor.kinds.registry import default_registry

    def register(handler: Handler) -> Handler:
        kind = Kind(
            name=name, handler=handler, input_model=input, retry=retry,
            timeout_seconds=seconds_of(timeout) if timeout is not None else None, browser=browser,
            description=inspect.getdoc(handler) or "", module=handler.__module__,
        )
        (registry or default_registry).add(kind)
        return handler

    return register
