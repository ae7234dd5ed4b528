"""The services' event loop: uvloop by default, asyncio's own with
CONVEYOR_EVENT_LOOP=asyncio. On uvloop the loop's own work per call (the selector,
callbacks, the sockets' transports) costs less: on this 2-core machine a gateway's main
thread spent 1,308 -> 1,033 µs per SubmitJob, and a bare grpc.aio server's 393 -> 318
µs per call (README, Benchmarks)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoop = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], loop: EventLoop = "uvloop") -> T:
    """asyncio.run(main) on the chosen loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
