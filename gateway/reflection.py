"""gRPC server reflection that serves the contract's descriptors WITH their comments.

The generated _pb2 modules embed their file descriptors without source info, so the
stock grpc_reflection servicer (which serializes those) answers `grpcurl describe`
without a single comment. This one answers the conveyor/v1 files (and their imports)
from conveyor/v1/descriptor_set.binpb, which protos/generate.py builds with buf and
commits beside the generated code: comments (source_code_info), json_name and field
options as in the .proto files. Other files (grpc.health.v1, the reflection service's
own) come from the default descriptor pool, as the stock servicer has them.

Same protocol as grpc_reflection (grpc.reflection.v1alpha, which grpcurl and buf curl
speak); symbols are resolved with the default pool, which holds every generated file
the gateway imported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import structlog
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import conveyor.v1

log = structlog.get_logger("gateway.reflection")
#: Written by protos/generate.py.
DESCRIPTOR_SET = Path(conveyor.v1.__file__).with_name("descriptor_set.binpb")
SERVICE_NAME: str = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> dict[str, bytes]:
    """Each file of the set, serialized, by name; none when the set is missing (an
    install without the package's data): reflection then works, without comments."""
    if not path.exists():
        log.warning("reflection without comments: descriptor set missing", path=str(path))
        return {}
    fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return {f.name: f.SerializeToString() for f in fds.file}


class ReflectionServicer(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: Iterable[str], files: dict[str, bytes] | None = None) -> None:
        self._services = tuple(sorted(service_names))
        self._files = load_descriptor_set() if files is None else files
        self._pool = descriptor_pool.Default()

    def _serialized(self, file: descriptor.FileDescriptor) -> bytes:
        if file.name in self._files:
            return self._files[file.name]
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return proto.SerializeToString()

    def _files_response(
        self, file: descriptor.FileDescriptor, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        """The file and every file it imports, transitively (as grpc_reflection sends them)."""
        seen: dict[str, bytes] = {}
        todo = [file]
        while todo:
            f = todo.pop()
            if f.name not in seen:
                seen[f.name] = self._serialized(f)
                todo += f.dependencies
        return reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request,
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=list(seen.values())),
        )

    @staticmethod
    def _not_found(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        return reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request,
            error_response=reflection_pb2.ErrorResponse(
                error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message=grpc.StatusCode.NOT_FOUND.value[1]),
        )

    def answer(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        what = request.WhichOneof("message_request")
        try:
            if what == "list_services":
                return reflection_pb2.ServerReflectionResponse(
                    valid_host=request.host, original_request=request,
                    list_services_response=reflection_pb2.ListServiceResponse(
                        service=[reflection_pb2.ServiceResponse(name=name) for name in self._services]),
                )
            if what == "file_by_filename":
                return self._files_response(self._pool.FindFileByName(request.file_by_filename), request)
            if what == "file_containing_symbol":
                return self._files_response(
                    self._pool.FindFileContainingSymbol(request.file_containing_symbol), request)
            if what == "file_containing_extension":
                ext = request.file_containing_extension
                message = self._pool.FindMessageTypeByName(ext.containing_type)
                extension = self._pool.FindExtensionByNumber(message, ext.extension_number)
                return self._files_response(extension.file, request)  # type: ignore[attr-defined]
            if what == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                return reflection_pb2.ServerReflectionResponse(
                    valid_host=request.host, original_request=request,
                    all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                        base_type_name=message.full_name,
                        extension_number=[e.number for e in self._pool.FindAllExtensions(message)]),
                )
        except KeyError:
            return self._not_found(request)
        return reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request,
            error_response=reflection_pb2.ErrorResponse(
                error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                error_message=grpc.StatusCode.INVALID_ARGUMENT.value[1]),
        )

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in request_iterator:
            yield self.answer(request)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection (with the contract's comments) for `service_names` on `server`."""
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(service_names), server)
