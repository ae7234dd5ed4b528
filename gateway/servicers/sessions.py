"""SessionService: a tenant's saved browser sessions (conveyor/store/session_store.py).
Thin: check the name, call the store with the caller's tenant, answer."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from conveyor.store.session_store import SessionInfo, SessionStore, check_session_name
from conveyor.v1 import session_service_pb2 as pb
from conveyor.v1 import session_service_pb2_grpc
from gateway.servicers.jobs import caller_owner


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def session_to_proto(info: SessionInfo) -> pb.Session:
    return pb.Session(
        name=info.name, owner=info.owner, create_time=_timestamp(info.created_ms),
        expire_time=_timestamp(info.expires_ms), size_bytes=info.size_bytes, job_id=info.job_id,
        cookie_count=info.cookie_count, origins=list(info.origins),
    )


class SessionServicer(session_service_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        infos = await self.sessions.list_sessions(caller_owner(context))
        return pb.ListSessionsResponse(sessions=[session_to_proto(i) for i in infos])

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        await self.sessions.delete(caller_owner(context), check_session_name(request.name))
        return pb.DeleteSessionResponse()
