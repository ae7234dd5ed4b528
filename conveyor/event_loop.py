"""The services' event loop: uvloop by default, asyncio's own with
CONVEYOR_EVENT_LOOP=asyncio. On uvloop the loop's own work per call (the selector,
callbacks, the sockets' transports) costs less: with grpc.aio and redis-py on this
2-core machine, a gateway SubmitJob took ~20 % less CPU in its main thread
(bench/peers.py prints both loops' figures)."""

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
