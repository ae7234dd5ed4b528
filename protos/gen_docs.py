"""The API reference of the contract, docs/api/, generated from the protos' comments.

    python protos/gen_docs.py [--descriptor-set FILE] [--out DIR]

reads the FileDescriptorSet that generate.py writes (conveyor/v1/descriptor_set.binpb:
every conveyor/v1 file with its comments, `buf build --as-file-descriptor-set`) and
writes DIR/README.md (the index) and one page per proto file (DIR/job_service.md...).
generate.py calls it; tests/test_api_docs.py fails when docs/api/ drifts from it.
Offline, no protoc plugin: the comments are the descriptors' source_code_info.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent
DESCRIPTOR_SET = ROOT / "conveyor" / "v1" / "descriptor_set.binpb"
DOCS = ROOT / "docs" / "api"
PACKAGE = "conveyor.v1"

# FileDescriptorProto / DescriptorProto / ... field numbers: the paths of source_code_info.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _ONEOF = 2, 3, 8
_VALUE, _METHOD = 2, 2

_T = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _T.TYPE_DOUBLE: "double", _T.TYPE_FLOAT: "float", _T.TYPE_INT64: "int64", _T.TYPE_UINT64: "uint64",
    _T.TYPE_INT32: "int32", _T.TYPE_FIXED64: "fixed64", _T.TYPE_FIXED32: "fixed32", _T.TYPE_BOOL: "bool",
    _T.TYPE_STRING: "string", _T.TYPE_BYTES: "bytes", _T.TYPE_UINT32: "uint32", _T.TYPE_SFIXED32: "sfixed32",
    _T.TYPE_SFIXED64: "sfixed64", _T.TYPE_SINT32: "sint32", _T.TYPE_SINT64: "sint64",
}
_BEHAVIOR = {
    field_behavior_pb2.REQUIRED: "required", field_behavior_pb2.OUTPUT_ONLY: "output only",
    field_behavior_pb2.OPTIONAL: "optional", field_behavior_pb2.INPUT_ONLY: "input only",
    field_behavior_pb2.IMMUTABLE: "immutable", field_behavior_pb2.IDENTIFIER: "identifier",
}
HEADER = "<!-- Generated from protos/conveyor/v1 by protos/gen_docs.py (run protos/generate.py). Do not edit. -->\n"


class File:
    """One proto file: its comments by path, and where each of its types is documented."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.proto = proto
        self.page = Path(proto.name).stem + ".md"
        self.comments = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}

    def comment(self, *path: int) -> str:
        return self.comments.get(path, "").strip("\n")


def load(path: Path = DESCRIPTOR_SET) -> list[File]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return [File(f) for f in fds.file if f.package == PACKAGE]


def _escape(text: str) -> str:
    """`<`, `>`, `&` as entities, except inside `code spans` (where Markdown shows them as they are)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _prose(comment: str) -> str:
    """A block comment as Markdown: paragraphs of its lines; indented lines as code."""
    out: list[str] = []
    para: list[str] = []
    code: list[str] = []

    def flush() -> None:
        if para:
            out.append(_escape(" ".join(para)))
            para.clear()
        if code:
            out.append("```\n" + "\n".join(code) + "\n```")
            code.clear()

    for raw in comment.split("\n"):
        line = raw[1:] if raw.startswith(" ") else raw
        if not line.strip():
            flush()
        elif line.startswith("  "):
            if para:
                flush()
            code.append(line.rstrip())
        else:
            if code:
                flush()
            para.append(line.strip())
    flush()
    return "\n\n".join(out)


def _cell(comment: str) -> str:
    """A comment as one table cell."""
    return _escape(" ".join(line.strip() for line in comment.split("\n") if line.strip())).replace("|", "\\|")


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower().replace(" ", "-"))


class Reference:
    def __init__(self, files: list[File]) -> None:
        self.files = files
        #: ".conveyor.v1.Job" -> (page, short name)
        self.where: dict[str, tuple[str, str]] = {}
        self.maps: dict[str, descriptor_pb2.DescriptorProto] = {}
        for f in files:
            for message, prefix in self._messages(f.proto.message_type, f".{PACKAGE}"):
                full = f"{prefix}.{message.name}"
                if message.options.map_entry:
                    self.maps[full] = message
                else:
                    self.where[full] = (f.page, full[len(PACKAGE) + 2:])
            for enum in f.proto.enum_type:
                self.where[f".{PACKAGE}.{enum.name}"] = (f.page, enum.name)

    def _messages(
        self, messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str
    ) -> Iterator[tuple[descriptor_pb2.DescriptorProto, str]]:
        for m in messages:
            yield m, prefix
            yield from self._messages(m.nested_type, f"{prefix}.{m.name}")

    def link(self, type_name: str, page: str) -> str:
        if type_name in self.where:
            target, short = self.where[type_name]
            return f"[{short}]({'' if target == page else target}#{_anchor(short)})"
        return f"`{type_name.lstrip('.')}`"

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto, page: str) -> str:
        if field.type_name in self.maps:
            key, value = self.maps[field.type_name].field
            return f"map&lt;{self.field_type(key, page)}, {self.field_type(value, page)}&gt;"
        base = self.link(field.type_name, page) if field.type_name else f"`{_SCALARS[field.type]}`"
        return f"repeated {base}" if field.label == _T.LABEL_REPEATED else base

    # ---- pages -------------------------------------------------------------------

    def page(self, f: File) -> str:
        p = f.proto
        lines = [HEADER, f"# {p.name}", ""]
        lines += [f"Package `{p.package}`. Back to the [index](README.md).", ""]
        for i, service in enumerate(p.service):
            lines += self._service(f, i, service)
        messages = list(self._messages(p.message_type, ""))
        if any(not m.options.map_entry for m, _ in messages):
            lines += ["## Messages", ""]
        for path, message in self._message_paths(p.message_type, (_MESSAGE,)):
            lines += self._message(f, path, message)
        if p.enum_type:
            lines += ["## Enums", ""]
        for i, enum in enumerate(p.enum_type):
            lines += self._enum(f, (_ENUM, i), enum)
        return "\n".join(lines).rstrip("\n") + "\n"

    def _message_paths(
        self, messages: Iterable[descriptor_pb2.DescriptorProto], path: tuple[int, ...]
    ) -> Iterator[tuple[tuple[int, ...], descriptor_pb2.DescriptorProto]]:
        for i, m in enumerate(messages):
            if not m.options.map_entry:
                yield (*path, i), m
                yield from self._message_paths(m.nested_type, (*path, i, _NESTED))

    def _service(self, f: File, i: int, service: descriptor_pb2.ServiceDescriptorProto) -> list[str]:
        lines = [f"## {service.name}", "", _prose(f.comment(_SERVICE, i)), "",
                 "| RPC | Request | Response | Description |", "|---|---|---|---|"]
        for j, m in enumerate(service.method):
            request = ("stream " if m.client_streaming else "") + self.link(m.input_type, f.page)
            response = ("stream " if m.server_streaming else "") + self.link(m.output_type, f.page)
            lines.append(f"| `{m.name}` | {request} | {response} | {_cell(f.comment(_SERVICE, i, _METHOD, j))} |")
        return [*lines, ""]

    def _message(self, f: File, path: tuple[int, ...], message: descriptor_pb2.DescriptorProto) -> list[str]:
        name = self.where[f".{PACKAGE}.{self._qualified(f, path)}"][1]
        lines = [f"### {name}", "", _prose(f.comment(*path)), ""]
        if not message.field:
            return [*lines, "No fields.", ""]
        lines += ["| Field | JSON | Type | Behavior | Description |", "|---|---|---|---|---|"]
        for j, field in enumerate(message.field):
            notes = [_BEHAVIOR[b] for b in field.options.Extensions[field_behavior_pb2.field_behavior]]
            if field.proto3_optional:
                notes.append("optional (presence)")
            elif field.HasField("oneof_index"):
                notes.append(f"oneof `{message.oneof_decl[field.oneof_index].name}`")
            lines.append(f"| `{field.name}` | `{field.json_name}` | {self.field_type(field, f.page)} | "
                         f"{', '.join(notes)} | {_cell(f.comment(*path, _FIELD, j))} |")
        lines.append("")
        for k, oneof in enumerate(message.oneof_decl):
            members = [x for x in message.field if x.HasField("oneof_index") and x.oneof_index == k]
            if members and members[0].proto3_optional:
                continue  # a proto3 `optional` field's synthetic oneof
            text = _cell(f.comment(*path, _ONEOF, k))
            lines += [f"Oneof `{oneof.name}` (at most one of "
                      f"{', '.join(f'`{x.json_name}`' for x in members)}): {text}", ""]
        return lines

    def _qualified(self, f: File, path: tuple[int, ...]) -> str:
        names = []
        messages: Iterable[descriptor_pb2.DescriptorProto] = f.proto.message_type
        for index in path[1::2]:
            m = list(messages)[index]
            names.append(m.name)
            messages = m.nested_type
        return ".".join(names)

    def _enum(self, f: File, path: tuple[int, ...], enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
        lines = [f"### {enum.name}", "", _prose(f.comment(*path)), "",
                 "| Value | Number | Description |", "|---|---|---|"]
        for j, value in enumerate(enum.value):
            lines.append(f"| `{value.name}` | {value.number} | {_cell(f.comment(*path, _VALUE, j))} |")
        return [*lines, ""]

    def index(self) -> str:
        lines = [HEADER, "# Conveyor API reference (`conveyor.v1`)", "",
                 "Generated from the comments of [`protos/conveyor/v1/`](../../protos/conveyor/v1/) by "
                 "`protos/gen_docs.py` (`.venv/bin/python protos/generate.py` regenerates it; a test fails "
                 "when it drifts). The same comments are served by the gateway's reflection "
                 "(`grpcurl describe`), and are in the generated SDK code.", "",
                 "- **JSON names**: the protobuf JSON mapping (buf curl, grpcurl, the TypeScript SDK) uses the "
                 "*JSON* column (lowerCamelCase; `class` and `not` for `ExpectAction.class_name` and "
                 "`negate`). Enums are written by name, `google.protobuf.Duration` as `\"1.5s\"`, "
                 "`Timestamp` as RFC 3339, 64-bit integers as strings.",
                 "- **Behavior** ([`google.api.field_behavior`](https://google.aip.dev/203)): *required* — the "
                 "call is refused (INVALID_ARGUMENT naming the field, or NOT_FOUND for an empty id) without it; "
                 "*output only* — set by the server, never read from a request; *optional (presence)* — a "
                 "proto3 `optional` field, whose absence differs from its zero value. A oneof takes at "
                 "most one of its fields.",
                 "- **Bounds**: every limit is in the field's description; README.md, \"Bounds of every "
                 "field\", has them in one table.", "",
                 "## Services", "", "| Service | File | Description |", "|---|---|---|"]
        for f in self.files:
            for i, service in enumerate(f.proto.service):
                first = _cell(f.comment(_SERVICE, i).split("\n\n")[0])
                lines.append(f"| [{service.name}]({f.page}#{_anchor(service.name)}) | `{f.proto.name}` | {first} |")
        lines += ["", "## Files", ""]
        for f in self.files:
            names = [m.name for m in f.proto.message_type] + [e.name for e in f.proto.enum_type]
            lines.append(f"- [`{f.proto.name}`]({f.page}): {', '.join(names)}")
        return "\n".join(lines) + "\n"


def render(files: list[File]) -> dict[str, str]:
    """docs/api/'s files by name."""
    ref = Reference(files)
    pages = {"README.md": ref.index()}
    for f in files:
        pages[f.page] = ref.page(f)
    return pages


def write(out: Path, descriptor_set: Path = DESCRIPTOR_SET) -> list[Path]:
    """Replace `out` with the pages rendered from `descriptor_set`. Returns the files written."""
    pages = render(load(descriptor_set))
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in pages.items():
        (out / name).write_text(text)
        written.append(out / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--descriptor-set", type=Path, default=DESCRIPTOR_SET)
    parser.add_argument("--out", type=Path, default=DOCS)
    ns = parser.parse_args()
    for path in write(ns.out, ns.descriptor_set):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
