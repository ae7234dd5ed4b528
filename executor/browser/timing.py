"""A step's time budget."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2

#: How long past its deadline a step may run before the runner's backstop ends it (a
#: step's own waits end at its deadline; the backstop catches anything that does not).
BACKSTOP_GRACE_SECONDS = 2.0
#: The part of that grace a failed expectation may spend reading the actual value
#: (the rest is the margin that keeps its report an EXPECTATION_FAILED, not a timeout).
ACTUAL_VALUE_READ_SECONDS = BACKSTOP_GRACE_SECONDS - 0.5


def seconds_of(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


class Deadline:
    """The end of a step's time budget; every wait inside the step takes what is left."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def remaining_ms(self) -> float:
        # Playwright reads a timeout of 0 as "no timeout": never hand it one.
        return max(1.0, self.remaining() * 1000)

    def expired(self) -> bool:
        return time.monotonic() >= self._end
