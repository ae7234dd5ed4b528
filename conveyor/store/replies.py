"""The store scripts' refusals as domain errors, in one place.

A script that refuses what it was asked answers with the error reply
`CONVEYOR <REASON> <arg>...` (refuse() in lua/includes/base.lua; each script's header
lists its refusals); every other reply is data. `refused()` turns such a reply into the
domain error the caller raises, given what the caller knows of its request
(`Context`); an error reply that is no refusal is a fault and is raised as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from conveyor.errors import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    ResourceExhausted,
    job_state_reason,
)

PREFIX = "CONVEYOR"


@dataclass(frozen=True)
class Context:
    """What the caller asked, for the error's words."""

    action: str = ""
    dedup_key: str = ""
    request_id: str = ""


def _job_not_found(args: list[str], c: Context) -> ConveyorError:
    (job_id,) = args
    return NotFound(f"job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})


def _job_state(args: list[str], c: Context) -> ConveyorError:
    job_id, state = args
    return FailedPrecondition(
        f"cannot {c.action or 'change'} job {job_id!r}: it is {state}",
        reason=job_state_reason(state), metadata={"job_id": job_id, "state": state},
    )


def _duplicate_job(args: list[str], c: Context) -> ConveyorError:
    (other,) = args
    return AlreadyExists(
        f"a job with dedup key {c.dedup_key!r} is already waiting, running or within its window: {other}",
        reason="DUPLICATE_JOB", metadata={"existing_job_id": other, "dedup_key": c.dedup_key},
    )


def _request_id_reused(args: list[str], c: Context) -> ConveyorError:
    (made,) = args
    what = "schedule" if c.action == "create schedule" else "job"
    return AlreadyExists(
        f"request id {c.request_id!r} was used within the last 24 h for another request, which made "
        f"{what} {made}: a repeat must send the same request, a new request a new request id",
        reason="REQUEST_ID_REUSED", metadata={f"existing_{what}_id": made, "request_id": c.request_id},
    )


def _schedule_not_found(args: list[str], c: Context) -> ConveyorError:
    (schedule_id,) = args
    return NotFound(f"schedule {schedule_id!r} not found", reason="SCHEDULE_NOT_FOUND",
                    metadata={"schedule_id": schedule_id})


def _schedule_deleted(args: list[str], c: Context) -> ConveyorError:
    (schedule_id,) = args
    return FailedPrecondition(
        f"request id {c.request_id!r} made schedule {schedule_id}, which has since been deleted; "
        "send a new request id to make another",
        reason="SCHEDULE_DELETED", metadata={"schedule_id": schedule_id, "request_id": c.request_id},
    )


def _too_many_schedules(args: list[str], c: Context) -> ConveyorError:
    (most,) = args
    return ResourceExhausted(
        f"at most {most} schedules per tenant; delete some first",
        reason="TOO_MANY_SCHEDULES", retry_after_seconds=60.0,
    )


def _quota_exceeded(args: list[str], c: Context) -> ConveyorError:
    tenant, most = args
    return QuotaExceeded(
        f"tenant {tenant!r} has {most} open jobs (waiting, delayed or running), its quota: submit again once "
        "some have ended", subject=f"tenant:{tenant}", metadata={"tenant": tenant, "limit": most},
    )


def _rate_exceeded(args: list[str], c: Context) -> ConveyorError:
    tenant, most = args
    return QuotaExceeded(
        f"tenant {tenant!r} submits at most {most} jobs a second: submit again in a moment",
        subject=f"tenant:{tenant}:submit-rate", retry_after_seconds=1.0, metadata={"tenant": tenant, "limit": most},
    )


def _key_not_found(args: list[str], c: Context) -> ConveyorError:
    (key_id,) = args
    return NotFound(f"key {key_id!r} not found", reason="KEY_NOT_FOUND", metadata={"key_id": key_id})


def _state_not_finished(args: list[str], c: Context) -> ConveyorError:
    (state,) = args
    return InvalidArgument(FieldViolation("state", f"{state} is not a finished state"))


REFUSALS: dict[str, Callable[[list[str], Context], ConveyorError]] = {
    "JOB_NOT_FOUND": _job_not_found,
    "JOB_STATE": _job_state,
    "DUPLICATE_JOB": _duplicate_job,
    "REQUEST_ID_REUSED": _request_id_reused,
    "SCHEDULE_NOT_FOUND": _schedule_not_found,
    "SCHEDULE_DELETED": _schedule_deleted,
    "TOO_MANY_SCHEDULES": _too_many_schedules,
    "STATE_NOT_FINISHED": _state_not_finished,
    "KEY_NOT_FOUND": _key_not_found,
    "QUOTA_EXCEEDED": _quota_exceeded,
    "RATE_EXCEEDED": _rate_exceeded,
}


def refused(exc: ResponseError, context: Context = Context()) -> ConveyorError:
    """The domain error for a script's refusal (to raise); an error reply that is
    no refusal is raised as it is."""
    words = str(exc).split(" ")
    if len(words) < 2 or words[0] != PREFIX or words[1] not in REFUSALS:
        raise exc
    return REFUSALS[words[1]](words[2:], context)
