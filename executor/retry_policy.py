"""The retry policy: which failures are retried, and when.

Exponential backoff with jitter: attempt n waits base * 2^(n-1) (2 s, 4 s, 8 s with
the defaults), scaled by a random factor in [1 - jitter, 1 + jitter] so that jobs
that failed together do not retry together, capped at `max_seconds`; or a fixed
backoff, base every time. The executor's settings give the defaults, a kind's Retry
overrides them, and a job's own `retry` overrides both (`for_job`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from conveyor.kinds import JobError, Kind
from conveyor.v1 import job_service_pb2, task_pb2


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.2
    backoff: str = "exponential"

    def for_job(self, kind: Kind | None, spec: job_service_pb2.SubmitJobRequest) -> RetryPolicy:
        """This policy with the kind's Retry, then the job's own `retry`, laid over it."""
        policy = self
        if kind is not None and kind.retry is not None:
            r = kind.retry
            policy = replace(policy, base_seconds=r.base_seconds, max_seconds=r.max_seconds, jitter=r.jitter,
                             backoff=r.backoff)
        if spec.HasField("retry"):
            own = spec.retry
            if own.backoff:
                policy = replace(policy, backoff="fixed" if own.backoff == task_pb2.BACKOFF_FIXED else "exponential")
            if own.HasField("base"):
                policy = replace(policy, base_seconds=own.base.ToMilliseconds() / 1000)
            if own.HasField("max"):
                policy = replace(policy, max_seconds=own.max.ToMilliseconds() / 1000)
        # A job's base above its kind's cap raises the cap: the job asked for that wait.
        return replace(policy, max_seconds=max(policy.max_seconds, policy.base_seconds))

    def backoff_seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        growth = 1 if self.backoff == "fixed" else 2 ** max(attempt - 1, 0)
        raw = self.base_seconds * growth
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return float(min(raw * factor, self.max_seconds))

    def retry_delay_ms(self, error: JobError, attempt: int, attempt_limit: int) -> int | None:
        """How long until the next attempt, or None for none (not retryable, or no
        attempts left)."""
        if not error.retryable or attempt >= attempt_limit:
            return None
        return int(self.backoff_seconds(attempt) * 1000)
