"""Schedules in the gateway: checking a CreateScheduleRequest, and the loop that
fires due occurrences.

Every gateway runs the loop; the store's fire script claims each occurrence by
compare-and-set, so with several gateways an occurrence still fires exactly once.
The loop looks for due schedules every TICK_SECONDS and, when the earliest next run
is closer than that, sleeps exactly until it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis.exceptions import RedisError

from conveyor.cron import CronError, check_cron, check_time_zone
from conveyor.errors import FieldViolation
from conveyor.store.schedule_store import FireRound, ScheduleStore
from conveyor.v1 import schedule_service_pb2
from gateway.background import BackgroundLoop
from gateway.validation import MAX_REQUEST_ID, Limits, validate_submit

log = structlog.get_logger("gateway.schedules")

TICK_SECONDS = 0.5
MIN_WAIT_SECONDS = 0.01
FIRE_BATCH = 100
MAX_NAME = 128
DEFAULT_TIME_ZONE = "UTC"


def validate_schedule(req: schedule_service_pb2.CreateScheduleRequest, limits: Limits) -> list[FieldViolation]:
    """Every bad field of the request, named by its path (template fields as
    `template.<field>`)."""
    v: list[FieldViolation] = []
    if not req.cron.strip():
        v.append(FieldViolation("cron", "a cron expression is required, e.g. '*/5 * * * *'"))
    else:
        try:
            check_cron(req.cron)
        except CronError as err:
            v.append(FieldViolation("cron", str(err)))
    if req.time_zone:
        try:
            check_time_zone(req.time_zone)
        except CronError as err:
            v.append(FieldViolation("time_zone", str(err)))
    if len(req.name) > MAX_NAME:
        v.append(FieldViolation("name", f"at most {MAX_NAME} characters"))
    if len(req.request_id) > MAX_REQUEST_ID:
        v.append(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
    if not req.HasField("template"):
        v.append(FieldViolation("template", "a job template (a SubmitJob request) is required"))
        return v
    t = req.template
    v += validate_submit(t, limits, prefix="template.")
    if t.HasField("run_at"):
        v.append(FieldViolation("template.run_at", "a schedule's jobs start at each occurrence; use delay"))
    if t.request_id:
        v.append(FieldViolation("template.request_id", "each occurrence has a request id of its own"))
    if t.depends_on:
        v.append(FieldViolation("template.depends_on", "a schedule's jobs cannot depend on fixed jobs"))
    return v


class ScheduleFiring(BackgroundLoop):
    """The firing loop of one gateway (woken when a schedule is created or resumed)."""

    name = "schedule-firing"

    def __init__(self, store: ScheduleStore, on_fired: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._store = store
        self._on_fired = on_fired
        self.fired = 0

    async def run_round(self) -> float:
        wait = TICK_SECONDS
        try:
            round_ = await self._store.fire_due(FIRE_BATCH)
            self._report(round_)
            if round_.attempted >= FIRE_BATCH and round_.fired:
                return 0.0  # more may be due
            until = await self._store.ms_until_due()
            if until is not None and until > 0:
                wait = max(MIN_WAIT_SECONDS, min(wait, until / 1000))
            elif until == 0 and not round_.failed:
                # Came due just now, or another gateway is firing it right now.
                wait = MIN_WAIT_SECONDS
            # (One that failed is tried again at the next tick, not at once.)
        except (RedisError, OSError) as exc:
            log.warning("schedules: could not reach redis", error=str(exc))
        except Exception:
            # A bug must not stop every schedule of this gateway for good.
            log.exception("schedules: firing failed")
        return wait

    def _report(self, round_: FireRound) -> None:
        for schedule_id, error in round_.failed.items():
            log.warning("schedule could not fire; retrying at the next tick", schedule_id=schedule_id, error=error)
        for f in round_.fired:
            self.fired += 1
            if f.duplicate_of:
                log.info("schedule occurrence refused by the template's dedup key", schedule_id=f.schedule_id,
                         occurrence_ms=f.occurrence_ms, duplicate_of=f.duplicate_of, next_run_ms=f.next_run_ms)
            else:
                log.info("schedule fired", schedule_id=f.schedule_id, occurrence_ms=f.occurrence_ms,
                         job_id=f.job_id, state=f.state, existing=f.existing, next_run_ms=f.next_run_ms)
        if round_.fired:
            self._on_fired()
