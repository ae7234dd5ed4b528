"""The retry policy: which failures are retried, and when.

Exponential backoff with jitter: attempt n waits base * 2^(n-1) (2 s, 4 s, 8 s with
the defaults), scaled by a random factor in [1 - jitter, 1 + jitter] so that jobs
that failed together do not retry together, capped at `max_seconds`."""

from __future__ import annotations

import random
from dataclasses import dataclass

from executor.errors import JobError


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.2

    def backoff_seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        raw = self.base_seconds * 2 ** max(attempt - 1, 0)
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return float(min(raw * factor, self.max_seconds))

    def retry_delay_ms(self, error: JobError, attempt: int, attempt_limit: int) -> int | None:
        """How long until the next attempt, or None for none (not retryable, or no
        attempts left)."""
        if not error.retryable or attempt >= attempt_limit:
            return None
        return int(self.backoff_seconds(attempt) * 1000)
