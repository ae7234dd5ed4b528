"""Helpers for the browser tests: settings, tasks in the JSON mapping, progress."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from conveyor.settings import Settings
from conveyor.v1 import job_pb2, task_pb2
from executor.browser.runner import BrowserTaskRunner


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "allowed_hosts": ["127.0.0.1"],
        "data_dir": data_dir,
        "default_step_timeout_seconds": 5.0,
        "max_concurrent_browsers": 2,
        "contexts_per_browser": 4,
        # The pool tests open several contexts at once whatever the host's default.
        "browser_slots": 8,
        "browser_launch_timeout_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Progress:
    """The report() calls a run made."""

    calls: list[tuple[int, str, int, str]] = field(default_factory=list)

    async def __call__(self, progress: int, message: str, step_index: int, step_name: str) -> None:
        self.calls.append((progress, message, step_index, step_name))


def browser_task(steps: list[dict[str, Any]], files: list[dict[str, Any]] | None = None) -> task_pb2.BrowserTask:
    """A task from the JSON mapping, exactly as a client would send it."""
    return json_format.ParseDict({"steps": steps, "files": files or []}, task_pb2.BrowserTask())


_job_numbers = iter(range(1, 1_000_000))


def new_job_id() -> str:
    return f"job-{time.time_ns()}-{next(_job_numbers)}"


async def run_steps(
    runner: BrowserTaskRunner,
    steps: list[dict[str, Any]],
    files: list[dict[str, Any]] | None = None,
    job_id: str | None = None,
    progress: Progress | None = None,
) -> job_pb2.JobResult:
    return await runner.run(job_id or new_job_id(), browser_task(steps, files), progress or Progress())


def values_of(result: job_pb2.JobResult) -> dict[str, Any]:
    return {key: json_format.MessageToDict(value) for key, value in result.values.items()}
