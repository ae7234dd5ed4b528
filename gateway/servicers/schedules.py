"""ScheduleService: validate, call the schedule store, answer. Errors are raised as
domain errors and mapped to statuses by gateway.errors.ErrorInterceptor."""

from __future__ import annotations

import grpc

from conveyor.errors import FieldViolation, InvalidArgument
from conveyor.store.schedule_store import ScheduleStore, new_schedule_id
from conveyor.v1 import schedule_service_pb2 as pb
from conveyor.v1 import schedule_service_pb2_grpc
from gateway.mapping import new_schedule, schedule_to_proto
from gateway.runtime import GatewayRuntime
from gateway.schedules import ScheduleFiring, validate_schedule
from gateway.servicers.jobs import caller_owner
from gateway.validation import capped, check_page_token, check_schedule_id, validate_schedule_bounds


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, rt: GatewayRuntime, schedules: ScheduleStore, firing: ScheduleFiring) -> None:
        self.rt = rt
        self.schedules = schedules
        self.firing = firing

    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateScheduleResponse:
        # The sizes first: the cron and zone parsers quote what they refuse.
        violations = validate_schedule_bounds(request.cron, request.time_zone) or validate_schedule(
            request, self.rt.limits
        )
        if violations:
            raise InvalidArgument(capped(violations))
        s = self.rt.settings
        owner = caller_owner(context)
        new = new_schedule(
            request,
            owner=owner,
            schedule_id=new_schedule_id(await self.schedules.now_ms()),
            default_max_attempts=s.default_max_attempts,
            default_timeout_ms=int(s.default_job_timeout_seconds * 1000),
            weight=s.tenant_weights.get(owner, 1),
        )
        created, existing = await self.schedules.create(new)
        if not existing:
            self.firing.wake()
        return pb.CreateScheduleResponse(schedule=schedule_to_proto(created), existing=existing)

    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSchedulesResponse:
        if request.page_size < 0:
            raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
        records, token = await self.schedules.list_schedules(
            caller_owner(context), page_size=request.page_size, page_token=check_page_token(request.page_token)
        )
        return pb.ListSchedulesResponse(schedules=[schedule_to_proto(r) for r in records], next_page_token=token)

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetScheduleResponse:
        record = await self.schedules.get(check_schedule_id(request.id), caller_owner(context))
        return pb.GetScheduleResponse(schedule=schedule_to_proto(record))

    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        await self.schedules.delete(check_schedule_id(request.id), caller_owner(context))
        return pb.DeleteScheduleResponse()

    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseScheduleResponse:
        record = await self.schedules.pause(check_schedule_id(request.id), caller_owner(context))
        return pb.PauseScheduleResponse(schedule=schedule_to_proto(record))

    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeScheduleResponse:
        record = await self.schedules.resume(check_schedule_id(request.id), caller_owner(context))
        self.firing.wake()
        return pb.ResumeScheduleResponse(schedule=schedule_to_proto(record))
