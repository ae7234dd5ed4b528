"""Files for `upload` steps: only those sent with the task (`browser.files`), bounded
in size, written to a staging directory of the job's own that is removed after it.
Staging directories are named after the process that made them (`p<pid>-...`), so
that `sweep_staging` can remove those a dead process left behind."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path

from google.rpc import code_pb2

from conveyor.processes import pid_alive
from conveyor.v1 import task_pb2
from executor.browser.step_errors import StepFailure

_PLAIN_NAME = re.compile(r"^[^/\\\x00]{1,255}$")
_STAGING_DIR = re.compile(r"^p(\d+)-")


def sweep_staging(staging_root: Path) -> list[Path]:
    """Remove staging directories whose process is gone (a crashed executor's)."""
    removed: list[Path] = []
    if not staging_root.is_dir():
        return removed
    for entry in staging_root.iterdir():
        match = _STAGING_DIR.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _invalid_files(detail: str) -> StepFailure:
    return StepFailure("INVALID_FILES", detail, code=code_pb2.INVALID_ARGUMENT, retryable=False)


def check_files(files: list[task_pb2.File], max_bytes: int) -> dict[str, task_pb2.File]:
    """The task's files by name; plain, unique names, total size within the limit."""
    by_name: dict[str, task_pb2.File] = {}
    total = 0
    for file in files:
        if not _PLAIN_NAME.fullmatch(file.name) or file.name in {".", ".."}:
            raise _invalid_files(f"browser.files: {file.name!r} is not a plain file name")
        if file.name in by_name:
            raise _invalid_files(f"browser.files: {file.name!r} is given twice")
        by_name[file.name] = file
        total += len(file.content)
    if total > max_bytes:
        raise _invalid_files(
            f"browser.files: {total} bytes in all, more than the limit of {max_bytes} bytes"
        )
    return by_name


class UploadStager:
    """Writes a job's files to disk on first use; `cleanup()` removes them."""

    def __init__(self, files: dict[str, task_pb2.File], staging_root: Path, job_id: str) -> None:
        self.files = files
        self.staging_root = staging_root
        self.job_id = job_id
        self._dir: Path | None = None

    async def paths(self, names: list[str]) -> list[Path]:
        if not names:
            raise StepFailure(
                "INVALID_STEP", "upload names no file", code=code_pb2.INVALID_ARGUMENT,
                retryable=False,
            )
        missing = [n for n in names if n not in self.files]
        if missing:
            raise StepFailure(
                "UPLOAD_FILE_MISSING",
                f"file(s) {', '.join(repr(n) for n in missing)} not among browser.files",
                code=code_pb2.INVALID_ARGUMENT,
                retryable=False,
                metadata={"files": ",".join(missing)},
            )
        return await asyncio.to_thread(self._write, names)

    def _write(self, names: list[str]) -> list[Path]:
        if self._dir is None:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", self.job_id)[:64]
            self._dir = Path(
                tempfile.mkdtemp(prefix=f"p{os.getpid()}-{safe_id}-", dir=self.staging_root)
            )
        paths = []
        for name in names:
            path = self._dir / name
            if not path.exists():
                path.write_bytes(self.files[name].content)
            paths.append(path)
        return paths

    async def cleanup(self) -> None:
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None
