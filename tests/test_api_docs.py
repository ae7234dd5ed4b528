"""The contract documents itself (issue 15): every element of protos/conveyor/v1 has a
comment; the gateway's reflection serves those comments, the JSON names and the field
behaviors (what `grpcurl describe` and buf curl read); docs/api/ is generated from
them and does not drift."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support.processes import ROOT, Stack

DESCRIPTOR_SET = ROOT / "conveyor" / "v1" / "descriptor_set.binpb"
DOCS = ROOT / "docs" / "api"
BUF = Path(sys.executable).parent / "buf"


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "protos" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def contract_files() -> list[descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return [f for f in fds.file if f.package == "conveyor.v1"]


def comments(f: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): loc.leading_comments.strip() for loc in f.source_code_info.location}


def test_api_reference_matches_the_protos() -> None:
    docs = gen_docs()
    fresh = docs.render(docs.load(DESCRIPTOR_SET))
    committed = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    assert sorted(fresh) == sorted(committed), "docs/api files differ: run `python protos/generate.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"docs/api drifted from the protos: {stale}; run `python protos/generate.py`"
    # What a reader looks for: a service's RPCs, a field with its JSON name, behavior and limit.
    page = committed["job_service.md"]
    assert "| `SubmitJob` | [SubmitJobRequest](#submitjobrequest) | [SubmitJobResponse](#submitjobresponse) |" in page
    assert ("| `max_attempts` | `maxAttempts` | `int32` |  | Attempts before the job fails for good: 1 to 100; "
            "the server default (3) when 0. |") in page
    assert "| `id` | `id` | `string` | required |" in page
    assert "| `JOB_STATE_WAITING` | 1 |" in committed["job.md"]
    assert "[JobService](job_service.md#jobservice)" in committed["README.md"]


def test_every_element_of_the_contract_has_a_comment() -> None:
    """What `buf lint` (COMMENTS) enforces, checked on what reflection and the docs read:
    the committed descriptor set, with its source info."""
    missing: list[str] = []
    files = contract_files()
    assert len(files) == 8
    for f in files:
        c = comments(f)

        def need(path: tuple[int, ...], what: str, c: dict[tuple[int, ...], str] = c, name: str = f.name) -> None:
            if not c.get(path):
                missing.append(f"{name}: {what}")

        for i, s in enumerate(f.service):
            need((6, i), s.name)
            for j, m in enumerate(s.method):
                need((6, i, 2, j), f"{s.name}.{m.name}")
        for i, msg in enumerate(f.message_type):
            need((4, i), msg.name)
            for j, fl in enumerate(msg.field):
                need((4, i, 2, j), f"{msg.name}.{fl.name}")
        for i, e in enumerate(f.enum_type):
            need((5, i), e.name)
            for j, v in enumerate(e.value):
                need((5, i, 2, j), f"{e.name}.{v.name}")
    assert not missing, missing


def _served(target: str, symbol: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The files reflection answers for `symbol`, as a client gets them (grpc_reflection's own client)."""
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        main = db.FindFileContainingSymbol(symbol)
        files = {main.name: main}
        todo = list(main.dependency)
        while todo:
            name = todo.pop()
            if name not in files:
                files[name] = db.FindFileByName(name)
                todo += files[name].dependency
        services = set(db.get_services())
    assert "conveyor.v1.JobService" in services and "grpc.health.v1.Health" in services
    return files


def test_reflection_serves_comments_json_names_and_field_behavior(stack: Stack) -> None:
    files = _served(stack.grpc_target, "conveyor.v1.JobService")
    assert {"conveyor/v1/job_service.proto", "conveyor/v1/job.proto", "conveyor/v1/task.proto",
            "google/api/field_behavior.proto", "google/protobuf/duration.proto"} <= set(files)
    js = files["conveyor/v1/job_service.proto"]
    c = comments(js)
    service = next(i for i, s in enumerate(js.service) if s.name == "JobService")
    submit = next(j for j, m in enumerate(js.service[service].method) if m.name == "SubmitJob")
    request = next(i for i, m in enumerate(js.message_type) if m.name == "SubmitJobRequest")
    attempts = next(j for j, f in enumerate(js.message_type[request].field) if f.name == "max_attempts")
    assert c[(6, service)].startswith("Submit jobs, follow them, and act on them.")
    assert c[(6, service, 2, submit)] == "Submit one job. Answers at once with its id and queue position."
    assert "1 to 100" in c[(4, request, 2, attempts)]
    # json_name as buf curl and grpcurl print and read JSON: lowerCamelCase, and the two renamed fields.
    json_names = {f.name: f.json_name for f in js.message_type[request].field}
    assert json_names["max_attempts"] == "maxAttempts" and json_names["dedup_return_existing"] == "dedupReturnExisting"
    task = files["conveyor/v1/task.proto"]
    expect = next(m for m in task.message_type if m.name == "ExpectAction")
    assert {f.name: f.json_name for f in expect.field}["class_name"] == "class"
    assert {f.name: f.json_name for f in expect.field}["negate"] == "not"
    # Field behavior, as the option's extension (google.api.field_behavior, number 1052).
    get_job = next(m for m in js.message_type if m.name == "GetJobRequest")
    options = descriptor_pb2.FieldOptions.FromString(get_job.field[0].options.SerializeToString())
    assert list(options.Extensions[field_behavior_pb2.field_behavior]) == [field_behavior_pb2.REQUIRED]
    job = next(m for m in files["conveyor/v1/job.proto"].message_type if m.name == "Job")
    options = descriptor_pb2.FieldOptions.FromString(job.field[0].options.SerializeToString())
    assert list(options.Extensions[field_behavior_pb2.field_behavior]) == [field_behavior_pb2.OUTPUT_ONLY]
    # Files outside the contract still resolve (from the default pool).
    health = _served(stack.grpc_target, "grpc.health.v1.Health")
    assert any(f.package == "grpc.health.v1" for f in health.values())


def test_buf_curl_works_from_the_served_descriptors(stack: Stack) -> None:
    """A real reflection client: buf curl builds its schema from what the gateway serves."""
    url = f"http://{stack.grpc_target}"
    listed = subprocess.run([str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
                             url], check=True, capture_output=True, text=True, timeout=60)
    assert "conveyor.v1.JobService/SubmitJob" in listed.stdout.split()
    submitted = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--data",
         json.dumps({"queue": "api-docs", "maxAttempts": 2, "noop": {}}),
         f"{url}/conveyor.v1.JobService/SubmitJob"], check=True, capture_output=True, text=True, timeout=60)
    job_id = json.loads(submitted.stdout)["id"]
    got = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--data", json.dumps({"id": job_id}),
         f"{url}/conveyor.v1.JobService/GetJob"], check=True, capture_output=True, text=True, timeout=60)
    job = json.loads(got.stdout)["job"]
    assert job["maxAttempts"] == 2 and job["queue"] == "api-docs"
