"""A queue's statistics as the products ask for them (success rate, means, totals,
throughput) and its health verdict with the issues behind it, computed from what the
store keeps per queue (counters, per-minute counts, bounded samples and a bounded
look at the head of its line; never by scanning jobs). Pure: the gateway's GetQueue,
ListQueues and /metrics use the same functions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from conveyor.settings import Settings
from conveyor.store.records import QueueRecord, QueueStats

#: Upper bounds (ms) of the wait and run time histograms the store keeps per queue
#: (HIST_BOUNDS_MS in store/lua/includes/stats.lua: keep the two alike).
HISTOGRAM_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000,
                       3600000)
#: The minutes throughput is averaged over (the per-minute counts of the newest ones).
THROUGHPUT_MINUTES = 5
#: The minutes over which the backlog's trend is judged (its oldest noted size within them).
BACKLOG_TREND_MINUTES = 5
#: The waiting jobs at the head of a queue's line looked at for their kinds and ages.
HEAD_JOBS = 50


class Health(IntEnum):
    """A queue's verdict; the values are the proto enum's (QueueHealth)."""

    HEALTHY = 1
    DEGRADED = 2
    UNHEALTHY = 3


@dataclass(frozen=True)
class Thresholds:
    """When a queue's issues are raised (CONVEYOR_QUEUE_HEALTH_* settings)."""

    failure_rate_degraded: float = 0.1
    failure_rate_unhealthy: float = 0.5
    min_jobs: int = 10
    stall_seconds: float = 300.0
    backlog_jobs: int = 100


@dataclass(frozen=True)
class Issue:
    reason: str
    severity: Health
    message: str


@dataclass(frozen=True)
class Insights:
    """What the store has on a queue beyond its counts (JobStore.queue_insights)."""

    now_ms: int = 0
    #: Jobs that ended in each state since the queue's first job: COMPLETED, FAILED, CANCELLED.
    totals: Mapping[str, int] = field(default_factory=dict)
    completed_per_minute: tuple[int, ...] = ()  # the last 60 minutes, oldest first
    failed_per_minute: tuple[int, ...] = ()
    cancelled_per_minute: tuple[int, ...] = ()
    #: Waiting jobs noted at the first end of each minute (minute -> count), last hour.
    waiting_at: Mapping[int, int] = field(default_factory=dict)
    #: Of the first HEAD_JOBS waiting jobs: how many per kind, and the oldest's ready time.
    head_kinds: Mapping[str, int] = field(default_factory=dict)
    oldest_ready_ms: int = 0
    #: Slots of the live executors, in all and per kind they serve.
    capacity: int = 0
    kind_capacity: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    success_rate: float | None  # completed / (completed + failed) over the last hour; None: none ended
    failure_rate: float | None
    ended_last_hour: int
    cancelled_last_hour: int
    throughput_per_minute: float  # jobs that ended (completed or failed) per minute, recently
    mean_wait_ms: float
    mean_run_ms: float
    totals: Mapping[str, int]


def _mean(values: tuple[int, ...]) -> float:
    return sum(values) / len(values) if values else 0.0


def throughput_per_minute(completed: tuple[int, ...], failed: tuple[int, ...], now_ms: int) -> float:
    """Completed and failed jobs per minute over the newest THROUGHPUT_MINUTES minutes
    of the counts (the current minute only as far as it has gone)."""
    n = THROUGHPUT_MINUTES
    ended = sum(completed[-n:]) + sum(failed[-n:])
    elapsed_min = (n - 1) + (now_ms % 60_000) / 60_000
    return ended / elapsed_min if elapsed_min > 0 else 0.0


def summarize(q: QueueRecord, ins: Insights) -> Summary:
    s = q.stats
    completed, failed = sum(s.completed_per_minute), sum(s.failed_per_minute)
    ended = completed + failed
    return Summary(
        success_rate=completed / ended if ended else None,
        failure_rate=failed / ended if ended else None,
        ended_last_hour=ended,
        cancelled_last_hour=sum(ins.cancelled_per_minute),
        throughput_per_minute=throughput_per_minute(s.completed_per_minute, s.failed_per_minute, ins.now_ms),
        mean_wait_ms=_mean(s.wait_ms),
        mean_run_ms=_mean(s.run_ms),
        totals=dict(ins.totals),
    )


def with_counts(q: QueueRecord, ins: Insights) -> QueueRecord:
    """A queue read without its statistics (ListQueues), given its per-minute counts."""
    if q.stats.completed_per_minute:
        return q
    return dataclasses.replace(q, stats=QueueStats(ins.completed_per_minute, ins.failed_per_minute))


def _backlog_then(ins: Insights) -> tuple[int, int] | None:
    """(minutes ago, waiting jobs then) of the oldest size noted within the trend window,
    at least a minute ago."""
    minute = ins.now_ms // 60_000
    for ago in range(BACKLOG_TREND_MINUTES, 0, -1):
        then = ins.waiting_at.get(minute - ago)
        if then is not None:
            return ago, then
    return None


def assess(q: QueueRecord, ins: Insights, t: Thresholds) -> tuple[Health, list[Issue]]:
    """The queue's verdict and the issues that make it so (none: HEALTHY)."""
    issues: list[Issue] = []
    waiting = q.counts.waiting
    summary = summarize(q, ins)
    if q.paused:
        issues.append(Issue("PAUSED", Health.DEGRADED,
                            f"the queue is paused: {waiting} waiting job(s) will not start until it is resumed"))
    if summary.failure_rate is not None and summary.ended_last_hour >= t.min_jobs:
        rate = summary.failure_rate
        severity = (Health.UNHEALTHY if rate >= t.failure_rate_unhealthy
                    else Health.DEGRADED if rate >= t.failure_rate_degraded else None)
        if severity is not None:
            failed = round(rate * summary.ended_last_hour)
            issues.append(Issue("HIGH_FAILURE_RATE", severity,
                                f"{rate:.0%} of the jobs that ended in the last hour failed "
                                f"({failed} of {summary.ended_last_hour})"))
    if waiting > 0:
        if ins.capacity <= 0:
            issues.append(Issue("NO_EXECUTOR", Health.UNHEALTHY,
                                f"{waiting} job(s) waiting and no live executor"))
        else:
            for kind, count in sorted(ins.head_kinds.items()):
                if ins.kind_capacity.get(kind, 0) <= 0:
                    issues.append(Issue("NO_EXECUTOR", Health.UNHEALTHY,
                                        f"no live executor serves kind {kind!r} ({count} of the next "
                                        f"{min(waiting, HEAD_JOBS)} job(s) in line are of it)"))
        if not q.paused and ins.oldest_ready_ms and ins.now_ms - ins.oldest_ready_ms > t.stall_seconds * 1000:
            waited = (ins.now_ms - ins.oldest_ready_ms) / 1000
            issues.append(Issue("STALLED", Health.UNHEALTHY if summary.throughput_per_minute == 0 else Health.DEGRADED,
                                f"a job near the head of the line has waited {waited:.0f} s "
                                f"(over {t.stall_seconds:g} s); {summary.throughput_per_minute:.1f} job(s)/min end"))
    then = _backlog_then(ins)
    if then is not None and waiting >= t.backlog_jobs and waiting > then[1]:
        ago, before = then
        issues.append(Issue("BACKLOG_GROWING", Health.DEGRADED,
                            f"the backlog grows faster than it drains: {before} waiting {ago} min ago, "
                            f"{waiting} now, {summary.throughput_per_minute:.1f} job(s)/min end"))
    health = max((i.severity for i in issues), default=Health.HEALTHY)
    return health, issues


def thresholds_of(settings: Settings) -> Thresholds:
    return Thresholds(
        failure_rate_degraded=settings.queue_health_failure_rate,
        failure_rate_unhealthy=settings.queue_health_failure_rate_unhealthy,
        min_jobs=settings.queue_health_min_jobs,
        stall_seconds=settings.queue_health_stall_seconds,
        backlog_jobs=settings.queue_health_backlog_jobs,
    )
