"""The shape of the gateway's background work (admission, schedule firing, the
janitor): a task that runs a round, then sleeps until woken or until the round's
chosen delay passes; started with the server, cancelled at shutdown."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    name = "background"

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Run a round now rather than at the end of the current wait."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_round(self) -> float:
        """One round of work; returns how long to sleep (seconds) unless woken."""
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            wait = await self.run_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
