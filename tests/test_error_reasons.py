"""Error reasons: every reason the code gives is in the catalog (conveyor/errors.py),
every catalog entry is given somewhere, with the code the catalog says, the README's
tables are the catalog's, and a user sees the reason for the common refusals."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from redis.exceptions import ResponseError

from conveyor import errors as domain
from conveyor.errors import JOB_REASONS, REQUEST_REASONS, job_state_reason
from conveyor.store.records import State
from conveyor.store.replies import refused
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2, schedule_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from conveyor.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from gateway import errors as gateway_errors
from tests.support.grpc_helpers import error_info, field_violations, submit_request, unique_queue, wait_state

pb = job_service_pb2
ROOT = Path(__file__).resolve().parents[1]
#: Where errors a user sees are made (a kind's own handler, as in examples/, may
#: raise reasons of its own: those are its author's).
SOURCES = ("gateway", "conveyor", "executor")
LUA = ROOT / "conveyor" / "store" / "lua"
WORD = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
#: Calls whose `reason=` is not an error's (log lines).
NOT_ERRORS = {"debug", "info", "warning", "error", "exception", "msg", "critical"}


# ---- what the code gives ---------------------------------------------------------------


@dataclass
class Uses:
    """Reasons found in the source, each with where (file:line)."""

    request: dict[str, set[str]] = field(default_factory=dict)  # a refused call's, with its code
    request_codes: dict[str, set[str]] = field(default_factory=dict)
    job: dict[str, set[str]] = field(default_factory=dict)  # a failed job's
    problems: list[str] = field(default_factory=list)


def _files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py") if "conveyor/v1" not in p.as_posix())


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _word(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and WORD.match(node.value):
        return node.value
    return None


def _error_classes() -> dict[str, type[domain.ConveyorError]]:
    """Every domain error class, by name (the ones conveyor.errors and gateway.errors define)."""
    out: dict[str, type[domain.ConveyorError]] = {}
    for module in (domain, gateway_errors):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, domain.ConveyorError):
                out[name] = value
    return out


def _code(cls: type[domain.ConveyorError]) -> str:
    code = next((c for t, c in gateway_errors.CODES.items() if issubclass(cls, t)), code_pb2.INTERNAL)
    return str(code_pb2.Code.Name(code))


def _reason_positions(trees: dict[Path, ast.Module]) -> dict[str, int]:
    """Callables (functions, classes by their __init__) that take `reason` positionally, and where."""
    out: dict[str, int] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        names = [a.arg for a in item.args.posonlyargs + item.args.args]
                        if "reason" in names:
                            out[node.name] = names.index("reason") - 1
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                if "reason" in names:
                    out[node.name] = names.index("reason") - (1 if names[0] in ("self", "cls") else 0)
    return out


def scan() -> Uses:
    uses = Uses()
    classes = _error_classes()
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in _files()}
    positions = _reason_positions(trees)

    def request(reason: str, code: str, where: str) -> None:
        uses.request.setdefault(reason, set()).add(where)
        uses.request_codes.setdefault(reason, set()).add(code)

    for path, tree in trees.items():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args
                defaults = list(zip(args[len(args) - len(node.args.defaults):], node.args.defaults, strict=True))
                defaults += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
                             if d is not None]
                for arg, default in defaults:
                    word = _word(default)
                    if arg.arg == "reason" and word:
                        uses.job.setdefault(word, set()).add(where)
            elif isinstance(node, ast.Dict):
                # The dashboard's HTTP errors: {"code": ..., "reason": ...}.
                keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True)
                        if isinstance(k, ast.Constant)}
                if "reason" in keys and "code" in keys:
                    word, code = _word(keys["reason"]), _word(keys["code"])
                    if word and code:
                        request(word, code, where)
            elif isinstance(node, ast.Call):
                name = _name(node.func)
                given = next((k.value for k in node.keywords if k.arg == "reason"), None)
                if name in classes:
                    cls = classes[name]
                    word = _word(given)
                    if given is None:
                        request(cls.reason, _code(cls), where)
                    elif word:
                        request(word, _code(cls), where)
                    elif not (isinstance(given, ast.Name) and given.id == "reason") and not (
                        isinstance(given, ast.Call) and _name(given.func) == "job_state_reason"
                    ):
                        uses.problems.append(f"{where}: {name}(reason=...) is not a catalog word")
                elif name == "FieldViolation":
                    word = _word(given)
                    if word:
                        request(word, "INVALID_ARGUMENT", where)
                elif name == "ErrorInfo":
                    word = _word(given)
                    if word:
                        request(word, "", where)
                elif name not in NOT_ERRORS and name != "__init__":
                    word = _word(given)
                    if word is None and name in positions and len(node.args) > positions[name]:
                        word = _word(node.args[positions[name]])
                    if word:
                        uses.job.setdefault(word, set()).add(where)
    # The store scripts' statuses (a job's error written by Lua).
    for path in sorted(LUA.rglob("*.lua")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for word in re.findall(r"status_bytes\(\s*\d+\s*,\s*'([A-Z_]+)'", line):
                uses.job.setdefault(word, set()).add(f"{path.relative_to(ROOT).as_posix()}:{n}")
    # A cancel or retry refused for the job's state: what the scripts answer, mapped.
    for state in State:
        error = refused(_refusal(f"CONVEYOR JOB_STATE j1 {state.value}"))
        request(error.reason, "FAILED_PRECONDITION", f"conveyor/store/replies.py (state {state.value})")
    return uses


def _refusal(text: str) -> ResponseError:
    return ResponseError(text)


USES = scan()


# ---- the catalog, the code and the README ---------------------------------------------------


def test_every_reason_a_refused_call_gives_is_in_the_catalog_with_its_code() -> None:
    assert not USES.problems, USES.problems
    unknown = {r: sorted(w) for r, w in USES.request.items() if r not in REQUEST_REASONS}
    assert not unknown, f"reasons given but not in conveyor/errors.py REQUEST_REASONS: {unknown}"
    wrong = {r: (REQUEST_REASONS[r].code, sorted(c)) for r, c in USES.request_codes.items()
             if c - {"", REQUEST_REASONS[r].code}}
    assert not wrong, f"catalog code vs the code given: {wrong}"


def test_every_reason_a_failed_job_gives_is_in_the_catalog() -> None:
    unknown = {r: sorted(w) for r, w in USES.job.items() if r not in JOB_REASONS}
    assert not unknown, f"job error reasons not in conveyor/errors.py JOB_REASONS: {unknown}"


def test_every_catalog_entry_is_given_somewhere() -> None:
    assert not set(REQUEST_REASONS) - set(USES.request), "catalog reasons nothing gives"
    # A job may fail with a refusal's reason (a browser session not saved: SESSION_LIMIT).
    assert not set(JOB_REASONS) - set(USES.job) - set(REQUEST_REASONS), "job reasons nothing gives"


def test_no_refusal_is_named_after_its_code() -> None:
    codes = set(code_pb2.Code.keys())
    for name, reason in {**REQUEST_REASONS, **JOB_REASONS}.items():
        assert reason.code in codes, (name, reason.code)
        assert reason.meaning and "\n" not in reason.meaning, name
    assert [n for n, r in REQUEST_REASONS.items() if n in codes] == ["INTERNAL"]
    # The domain errors' own defaults are code names: each raise site must say more
    # (what the scan above holds the code to).
    assert {job_state_reason(s.value) for s in State} <= set(REQUEST_REASONS)


def test_the_readme_section_is_generated_from_the_catalog() -> None:
    readme = domain.README.read_text(encoding="utf-8")
    assert domain.readme_section(readme) == domain.markdown(), (
        "README.md's error reasons section drifted: run `python -m conveyor.errors --write-readme`"
    )


# ---- what a user sees -------------------------------------------------------------------------


def assert_refused(err: grpc.aio.AioRpcError, reason: str) -> dict[str, str]:
    """The call failed with `reason` and the code the catalog gives it; its metadata."""
    info = error_info(err)
    assert (err.code().name, info.reason) == (REQUEST_REASONS[reason].code, reason), err.details()
    assert info.domain == "conveyor.dev"
    return dict(info.metadata)


async def test_an_unknown_job_is_job_not_found(jobs: JobServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.GetJob(pb.GetJobRequest(id="no-such-job"))
    assert assert_refused(err.value, "JOB_NOT_FOUND")["job_id"] == "no-such-job"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CancelJob(pb.CancelJobRequest(id="no-such-job"))
    assert_refused(err.value, "JOB_NOT_FOUND")


async def test_cancel_of_a_completed_job_and_retry_of_a_running_one_say_the_state(jobs: JobServiceStub) -> None:
    q = unique_queue("reasons")
    done = await jobs.SubmitJob(submit_request({"queue": q, "noop": {}}))
    running = await jobs.SubmitJob(submit_request({"queue": q, "noop": {"sleep": "30s"}}))
    await wait_state(jobs, done.id, {job_pb2.JOB_STATE_COMPLETED}, timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CancelJob(pb.CancelJobRequest(id=done.id))
    assert assert_refused(err.value, "JOB_COMPLETED") == {"job_id": done.id, "state": "COMPLETED"}

    await wait_state(jobs, running.id, {job_pb2.JOB_STATE_ACTIVE}, timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.RetryJob(pb.RetryJobRequest(id=running.id))
    assert assert_refused(err.value, "JOB_ACTIVE")["state"] == "ACTIVE"
    await jobs.CancelJob(pb.CancelJobRequest(id=running.id))

    delayed = await jobs.SubmitJob(submit_request({"queue": q, "delay": "600s", "noop": {}}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.RetryJob(pb.RetryJobRequest(id=delayed.id))
    assert_refused(err.value, "JOB_DELAYED")
    await jobs.CancelJob(pb.CancelJobRequest(id=delayed.id))


async def test_unknown_queue_schedule_and_artifact_say_which(jobs: JobServiceStub, queues: QueueServiceStub,
                                                             channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queues.GetQueue(queue_service_pb2.GetQueueRequest(queue=unique_queue("never-used")))
    assert_refused(err.value, "QUEUE_NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ScheduleServiceStub(channel).GetSchedule(schedule_service_pb2.GetScheduleRequest(id="no-such-schedule"))
    assert_refused(err.value, "SCHEDULE_NOT_FOUND")

    job = await jobs.SubmitJob(submit_request({"queue": unique_queue("reasons"), "delay": "600s", "noop": {}}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in jobs.GetArtifact(pb.GetArtifactRequest(job_id=job.id, name="nothing.png")):
            pass
    assert assert_refused(err.value, "ARTIFACT_NOT_FOUND") == {"job_id": job.id, "name": "nothing.png"}
    await jobs.CancelJob(pb.CancelJobRequest(id=job.id))


async def test_bad_fields_unknown_kinds_and_dependencies_name_the_field(jobs: JobServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(submit_request({"queue": "bad queue!", "noop": {}}))
    assert_refused(err.value, "FIELD_INVALID")
    assert "queue" in field_violations(err.value)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(submit_request({"queue": unique_queue(), "kind": {"name": "no.such.kind"}}))
    assert_refused(err.value, "KIND_NOT_FOUND")
    assert "no.such.kind" in field_violations(err.value)["kind.name"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(submit_request({"queue": unique_queue(), "dependsOn": ["no-such-job"], "noop": {}}))
    assert_refused(err.value, "DEPENDENCY_NOT_FOUND")
    assert "depends_on[0]" in field_violations(err.value)

    # Two different problems: the reason is the general one, each field named.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.SubmitJob(submit_request({"queue": "bad queue!", "dependsOn": ["no-such-job"], "noop": {}}))
    assert_refused(err.value, "FIELD_INVALID")
