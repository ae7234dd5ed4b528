"""What a step handler works with: the page, the job's outputs, its time budget, and
the selector it ended up using."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import struct_pb2
from google.rpc import code_pb2
from playwright.async_api import Page

from conveyor.artifacts import ArtifactStore
from conveyor.browser_steps import DEFAULT_TEST_ID_ATTRIBUTE
from conveyor.kinds.errors import JobError
from conveyor.v1 import job_pb2, task_pb2
from executor.browser.request_guard import RequestGuard
from executor.browser.step_errors import StepFailure
from executor.browser.targets import ResolvedTarget, describe, resolve, resolve_now
from executor.browser.timing import Deadline
from executor.browser.uploads import UploadStager

if TYPE_CHECKING:
    from executor.browser.page_control import JobPages


@dataclass
class JobOutputs:
    """What the job produced so far, and its budgets."""

    job_id: str
    artifacts: ArtifactStore
    max_artifact_bytes: int
    uploads: UploadStager
    result: job_pb2.JobResult = field(default_factory=job_pb2.JobResult)
    artifact_bytes: int = 0
    #: The job's pages (set when its context is open) and the test id attribute.
    pages: JobPages | None = None
    test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE
    #: Failed soft checks, in order (the job fails at the end if there are any).
    soft_failures: list[JobError] = field(default_factory=list)

    def page(self, default: Page) -> Page:
        """The page steps act on now."""
        return self.pages.current if self.pages is not None else default

    def set_value(self, key: str, value: str | list[str | None] | None) -> None:
        self.result.values[key].CopyFrom(to_value(value))

    def set_json(self, key: str, value: struct_pb2.Value) -> None:
        self.result.values[key].CopyFrom(value)

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
    #: The job's pages (popups, dialogs, downloads); None outside a job's run.
    pages: JobPages | None = None
    test_id_attribute: str = DEFAULT_TEST_ID_ATTRIBUTE
    #: A structured locator's target: `selector` is then its Playwright notation.
    structured: bool = False

    def _note(self, target: task_pb2.Target) -> None:
        self.structured = target.HasField("locator")
        self.selector = describe(target, self.test_id_attribute)

    async def target(self, target: task_pb2.Target, *, one: bool = True) -> ResolvedTarget:
        """Wait for the target; remember which selector matched. A locator must
        match exactly one element, unless the step reads every match (`one=False`)."""
        self._note(target)
        found = await resolve(self.page, target, self.deadline, self.test_id_attribute, one=one)
        self.matched_selector = found.selector
        return found

    async def target_now(self, target: task_pb2.Target) -> ResolvedTarget:
        """The target as it is now (no match may be the expected outcome)."""
        self._note(target)
        found = await resolve_now(self.page, target, self.test_id_attribute)
        self.matched_selector = found.selector
        return found

    def where(self) -> str:
        """The action and what it acts on, as errors show them."""
        if not self.selector:
            return self.action
        return f"{self.action} {self.selector}" if self.structured else f"{self.action} {self.selector!r}"
