"""What the pool hands a job: a fresh browser context with its page, the request
guard enforcing the URL policy in it, and a signal raised if the browser dies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from google.rpc import code_pb2
from playwright.async_api import BrowserContext, Page

from conveyor.kinds.errors import JobError
from executor.browser.policy_proxy import PolicyProxy
from executor.browser.request_guard import RequestGuard


def browser_crashed(detail: str, **metadata: str) -> JobError:
    return JobError(
        f"the browser crashed or disconnected while the job ran: {detail}",
        code=code_pb2.UNAVAILABLE,
        reason="BROWSER_CRASHED",
        retryable=True,
        metadata=metadata,
    )


@dataclass(eq=False)
class BrowserSession:
    context: BrowserContext
    page: Page
    guard: RequestGuard
    browser_id: str
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str = ""
    proxy: PolicyProxy | None = None

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    def crash_error(self) -> JobError:
        return browser_crashed(self.lost_reason or "browser connection lost", browser=self.browser_id)
