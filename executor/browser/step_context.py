"""What a step handler works with: the page, the job's outputs, its time budget, and
the selector it ended up using."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import struct_pb2
from google.rpc import code_pb2
from playwright.async_api import Page

from conveyor.artifacts import ArtifactStore
from conveyor.v1 import job_pb2, task_pb2
from executor.browser.request_guard import RequestGuard
from executor.browser.step_errors import StepFailure
from executor.browser.targets import ResolvedTarget, resolve, resolve_now
from executor.browser.timing import Deadline
from executor.browser.uploads import UploadStager


@dataclass
class JobOutputs:
    """What the job produced so far, and its budgets."""

    job_id: str
    artifacts: ArtifactStore
    max_artifact_bytes: int
    uploads: UploadStager
    result: job_pb2.JobResult = field(default_factory=job_pb2.JobResult)
    artifact_bytes: int = 0

    def set_value(self, key: str, value: str | list[str | None] | None) -> None:
        self.result.values[key].CopyFrom(to_value(value))

    async def add_artifact(self, step_index: int, name: str, data: bytes, content_type: str) -> None:
        if self.artifact_bytes + len(data) > self.max_artifact_bytes:
            raise StepFailure(
                "ARTIFACT_TOO_LARGE",
                f"the artifact {name} ({len(data)} bytes) would take the job's artifacts past "
                f"the limit of {self.max_artifact_bytes} bytes",
                code=code_pb2.RESOURCE_EXHAUSTED,
                retryable=False,
                metadata={"artifact": name, "size_bytes": str(len(data))},
            )
        await self.artifacts.put(self.job_id, name, data, content_type)
        self.artifact_bytes += len(data)
        for existing in self.result.artifacts:
            if existing.name == name:
                self.result.artifacts.remove(existing)
                break
        self.result.artifacts.append(
            job_pb2.Artifact(
                name=name, content_type=content_type, size_bytes=len(data), step_index=step_index
            )
        )


def to_value(value: str | list[str | None] | None) -> struct_pb2.Value:
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[to_value(v) for v in value]))


@dataclass
class StepContext:
    page: Page
    guard: RequestGuard
    outputs: JobOutputs
    index: int
    name: str
    action: str
    deadline: Deadline
    selector: str = ""
    matched_selector: str = ""

    async def target(self, target: task_pb2.Target) -> ResolvedTarget:
        """Wait for the target; remember which selector matched."""
        self.selector = target.selector
        found = await resolve(self.page, target, self.deadline)
        self.matched_selector = found.selector
        return found

    async def target_now(self, target: task_pb2.Target) -> ResolvedTarget:
        """The target as it is now (no match may be the expected outcome)."""
        self.selector = target.selector
        found = await resolve_now(self.page, target)
        self.matched_selector = found.selector
        return found
