"""protoc-gen-grpc_python for buf: the gRPC Python generator of grpcio-tools as a
protoc plugin (grpcio-tools ships it only inside its protoc, not as a program).

buf sends a CodeGeneratorRequest on stdin; this runs grpcio-tools' protoc on the
same descriptors (`--descriptor_set_in`) with `--grpc_python_out` and answers with
the files it wrote. Used by protos/buf.gen.yaml; no network, no other input.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc  # type: ignore[import-untyped]


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp) / "descriptors.binpb"
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(tmp) / "out"
        out.mkdir()
        option = f"{request.parameter}:" if request.parameter else ""
        args = ["protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={option}{out}",
                *request.file_to_generate]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc --grpc_python_out failed"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
