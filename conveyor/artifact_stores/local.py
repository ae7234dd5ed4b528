"""Artifacts in a directory (the default store): `<root>/<job_id>/<name>`, with the
content type in a hidden file beside it. Every host that reads them must see the same
directory; for executors and gateways on many hosts, use the S3 store (s3.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from conveyor.artifact_stores.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidArtifactPath,
    check_artifact_name,
    check_job_id,
    not_found,
)

_TYPE_SUFFIX = ".content-type"


class LocalArtifactStore:
    """Artifacts as files under `root/<job_id>/<name>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _job_dir(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)

    def _paths(self, job_id: str, name: str) -> tuple[Path, Path]:
        job_dir = self._job_dir(job_id)
        check_artifact_name(name)
        return job_dir / name, job_dir / f".{name}{_TYPE_SUFFIX}"

    def _read_paths(self, job_id: str, name: str) -> tuple[Path, Path]:
        """Paths to read; a name that could not have been stored is simply not found."""
        try:
            return self._paths(job_id, name)
        except InvalidArtifactPath:
            raise not_found(job_id, name) from None

    async def put(self, job_id: str, name: str, data: bytes, content_type: str) -> None:
        path, type_path = self._paths(job_id, name)
        await asyncio.to_thread(_write_artifact, path, type_path, data, content_type)

    async def stat(self, job_id: str, name: str) -> tuple[int, str]:
        path, type_path = self._read_paths(job_id, name)
        return await asyncio.to_thread(_stat_artifact, job_id, name, path, type_path)

    async def iter_chunks(
        self, job_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        path, _ = self._read_paths(job_id, name)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(job_id, name) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def delete_job(self, job_id: str) -> None:
        try:
            job_dir = self._job_dir(job_id)
        except InvalidArtifactPath:
            return  # no artifact could have been stored under it
        await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)

    async def delete_jobs(self, job_ids: list[str]) -> None:
        """delete_job for each of `job_ids`, in one thread hop; nothing is touched for a
        job that has no folder (most: jobs with no artifacts)."""
        await asyncio.to_thread(self._delete_dirs, job_ids)

    def _delete_dirs(self, job_ids: list[str]) -> None:
        try:
            present = {entry.name for entry in os.scandir(self.root)}
        except OSError:
            return  # no folder at all: no artifact was ever stored
        for job_id in job_ids:
            if job_id in present:
                with contextlib.suppress(InvalidArtifactPath):
                    shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    async def close(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_artifact(path: Path, type_path: Path, data: bytes, content_type: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The type first: a reader that sees the data file also sees its type.
    _write_atomically(type_path, content_type.encode())
    _write_atomically(path, data)


def _stat_artifact(job_id: str, name: str, path: Path, type_path: Path) -> tuple[int, str]:
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        raise not_found(job_id, name) from None
    try:
        content_type = type_path.read_text() or "application/octet-stream"
    except FileNotFoundError:
        content_type = "application/octet-stream"
    return size, content_type
