"""Cron occurrences of schedules: 5-field cron expressions read in an IANA time zone.

An occurrence is an instant whose wall-clock time in the schedule's zone matches the
expression. Daylight-saving changes follow one rule each way (as cron does, and as
RFC 5545 does for the gap):

- A wall time that does not exist (the hour skipped in spring) fires at the same
  distance past the gap's start, i.e. shifted forward by the gap: in Europe/Berlin
  "30 2 * * *" fires at 03:30 CEST on the day the clocks go from 02:00 to 03:00.
  Occurrences that land on the same instant are one occurrence.
- A wall time that exists twice (the hour repeated in autumn) fires once, at its
  first instance, unless the hour field is "*": a job that runs every hour (or more
  often) keeps running through the repeated hour, so "*/15 * * * *" fires every
  15 real minutes across the change while "30 2 * * *" fires once that night.

Times are epoch milliseconds (UTC) everywhere outside this module.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from functools import cache

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

CRON_FIELDS = 5
# No zone's offset changes by this much at once; candidates this far apart in wall
# time cannot swap order in real time.
_MAX_SHIFT = timedelta(hours=3)
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class CronError(ValueError):
    """An expression or a time zone that cannot be used; the message says why."""


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def check_time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone of an IANA name such as "Europe/Berlin" or "UTC"."""
    if name not in _zone_names():
        raise CronError(f"{name!r} is not an IANA time zone name (such as 'Europe/Berlin' or 'UTC')")
    return zoneinfo.ZoneInfo(name)


def check_cron(expr: str) -> str:
    """The expression, normalized to single spaces, if it has 5 valid fields
    (minute hour day-of-month month day-of-week) and matches some time."""
    fields = expr.split()
    if len(fields) != CRON_FIELDS:
        raise CronError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    normalized = " ".join(fields)
    try:
        croniter(normalized, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"{normalized!r} never matches a date") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise CronError(f"{normalized!r} is not a valid cron expression: {exc}") from None
    return normalized


def _instants(wall: datetime, zone: zoneinfo.ZoneInfo, repeat_hour: bool) -> list[datetime]:
    """The UTC instants at which the zone's clocks show the naive wall time `wall`."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first < second:  # shown twice (clocks set back)
        return [first, second] if repeat_hour else [first]
    # Skipped (clocks set forward): fold=0 reads it with the offset before the gap,
    # which is the later instant, `wall` shifted forward by the gap.
    return [first]


def _steady(zone: zoneinfo.ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether the zone's offset is the same at both ends (no change in between:
    zones change their offset at most twice a year)."""
    return start.astimezone(zone).utcoffset() == end.astimezone(zone).utcoffset()


def next_run_ms(expr: str, time_zone: str, after_ms: int) -> int:
    """The first occurrence strictly after `after_ms`."""
    zone = check_time_zone(time_zone)
    after = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
    wall_after = after.astimezone(zone).replace(tzinfo=None)
    if _steady(zone, after - _MAX_SHIFT, after + _MAX_SHIFT):
        # Far from a change of offset: wall time runs with real time, and any instant
        # after `after` shows a later wall time, so the first match is the answer.
        try:
            first: datetime = croniter(expr, wall_after).get_next(datetime)
        except CroniterBadDateError:
            raise CronError(f"{expr!r} has no occurrence after {after.isoformat()}") from None
        instant = first.replace(tzinfo=zone).astimezone(UTC)
        if instant <= after + _MAX_SHIFT:
            return int(instant.timestamp() * 1000)
    # Near a change (or a sparse expression): walk wall times from a little before,
    # map each to its instants, and keep the earliest one after `after`.
    repeat_hour = expr.split()[1] == "*"
    candidates = croniter(expr, wall_after - _MAX_SHIFT)
    best: datetime | None = None
    while True:
        try:
            wall: datetime = candidates.get_next(datetime)
        except CroniterBadDateError:
            if best is None:
                raise CronError(f"{expr!r} has no occurrence after {after.isoformat()}") from None
            break
        if best is not None and wall - _MAX_SHIFT > best.astimezone(zone).replace(tzinfo=None):
            break
        for instant in _instants(wall, zone, repeat_hour):
            if instant > after and (best is None or instant < best):
                best = instant
    return int(best.timestamp() * 1000)


def occurrences_ms(expr: str, time_zone: str, after_ms: int, count: int) -> list[int]:
    """The next `count` occurrences after `after_ms` (for display and tests)."""
    out: list[int] = []
    for _ in range(count):
        after_ms = next_run_ms(expr, time_zone, after_ms)
        out.append(after_ms)
    return out
