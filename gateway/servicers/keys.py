"""KeyService: API keys, managed by admins (the secret is in CreateKey's answer only)."""

from __future__ import annotations

import grpc
import structlog

from conveyor.errors import FieldViolation, InvalidArgument
from conveyor.store.key_store import KEY_ID, TENANT, KeyStore, Role
from conveyor.v1 import key_service_pb2 as pb
from conveyor.v1 import key_service_pb2_grpc
from gateway.auth import caller
from gateway.mapping import key_to_proto

log = structlog.get_logger("gateway.keys")
MAX_KEY_NAME = 128


def _check_tenant(tenant: str, field: str = "tenant") -> str:
    if not TENANT.match(tenant):
        raise InvalidArgument(FieldViolation(field, "letters, digits, '.', '_' and '-', at most 64, "
                                                    "starting with a letter or digit"))
    return tenant


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def CreateKey(self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext) -> pb.CreateKeyResponse:
        _check_tenant(request.tenant)
        if request.role not in (r.value for r in Role):
            raise InvalidArgument(FieldViolation("role", "ROLE_VIEWER, ROLE_SUBMITTER, ROLE_OPERATOR or ROLE_ADMIN"))
        if len(request.name) > MAX_KEY_NAME:
            raise InvalidArgument(FieldViolation("name", f"at most {MAX_KEY_NAME} characters"))
        record, secret = await self.keys.create(
            request.tenant, Role(request.role), request.name, created_by=caller().key_id
        )
        log.info("key created", new_key_id=record.id, key_tenant=record.tenant, role=record.role.name)
        return pb.CreateKeyResponse(key=key_to_proto(record), secret=secret)

    async def ListKeys(self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        if request.tenant:
            _check_tenant(request.tenant)
        return pb.ListKeysResponse(keys=[key_to_proto(k) for k in await self.keys.list_keys(request.tenant)])

    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> pb.RevokeKeyResponse:
        if not KEY_ID.match(request.id):
            raise InvalidArgument(FieldViolation("id", "a key's id (16 hex digits, as ListKeys shows it)"))
        record = await self.keys.revoke(request.id, revoked_by=caller().key_id)
        log.info("key revoked", revoked_key_id=record.id, key_tenant=record.tenant)
        return pb.RevokeKeyResponse(key=key_to_proto(record))

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext) -> pb.WhoAmIResponse:
        who = caller()
        return pb.WhoAmIResponse(tenant=who.tenant, role=int(who.role), key_id=who.key_id)  # type: ignore[arg-type]
