"""Schedule requests for both clients: a CreateScheduleRequest from a message or from
a dict in the protobuf JSON mapping, and the ScheduleService stub."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from conveyor.v1 import schedule_service_pb2, schedule_service_pb2_grpc
from conveyor_client._common import jsonable

Schedule = schedule_service_pb2.Schedule
ScheduleRequest = schedule_service_pb2.CreateScheduleRequest | Mapping[str, Any]
pb = schedule_service_pb2


def schedule_stub(channel: Any) -> schedule_service_pb2_grpc.ScheduleServiceStub:
    return schedule_service_pb2_grpc.ScheduleServiceStub(channel)


def to_create_schedule_request(request: ScheduleRequest) -> schedule_service_pb2.CreateScheduleRequest:
    """A CreateScheduleRequest from a message or a dict such as `{"cron": "*/5 * * * *",
    "timeZone": "Europe/Berlin", "template": {"noop": {}}}` (camelCase or snake_case
    names; the template is a SubmitJob request)."""
    if isinstance(request, schedule_service_pb2.CreateScheduleRequest):
        return request
    if not isinstance(request, Mapping):
        raise TypeError(f"a schedule request is a CreateScheduleRequest or a dict, not {type(request).__name__}")
    message = schedule_service_pb2.CreateScheduleRequest()
    try:
        json_format.ParseDict(jsonable(request), message)
    except json_format.ParseError as err:
        raise ValueError("not a valid CreateScheduleRequest: " + " ".join(str(err).split())) from err
    return message
