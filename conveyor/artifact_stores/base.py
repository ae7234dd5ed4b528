"""What every artifact store shares: the interface, the checks on job ids and names
(nothing can address a path or key outside the store's root), the not-found error."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from conveyor.errors import NotFound

DEFAULT_CHUNK_SIZE = 64 * 1024

# A job id or artifact name: starts with a letter or digit (so never "." or ".."),
# then letters, digits and . _ - only. No separators, no hidden files.
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class InvalidArtifactPath(ValueError):
    """A job id or artifact name that the store refuses (it could escape the root)."""


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidArtifactPath(f"invalid job id for the artifact store: {job_id!r}")
    return job_id


def check_artifact_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArtifactPath(f"invalid artifact name: {name!r}")
    return name


def not_found(job_id: str, name: str) -> NotFound:
    return NotFound(
        f"artifact {name!r} of job {job_id!r} not found", reason="ARTIFACT_NOT_FOUND",
        metadata={"job_id": job_id, "name": name},
    )


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ending in "/")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket[/prefix]`; raises ValueError on anything else."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"an S3 artifacts URL is s3://bucket[/prefix], not {url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"an S3 artifacts URL has no query, fragment or credentials: {url!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


@runtime_checkable
class ArtifactStore(Protocol):
    async def put(self, job_id: str, name: str, data: bytes, content_type: str) -> None:
        """Store (or replace) one artifact of a job."""
        ...

    async def stat(self, job_id: str, name: str) -> tuple[int, str]:
        """(size in bytes, content type); raises NotFound."""
        ...

    def iter_chunks(
        self, job_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """The artifact's bytes in chunks of at most `chunk_size`, never the whole file
        held at once; raises NotFound (on first iteration)."""
        ...

    async def delete_job(self, job_id: str) -> None:
        """Delete every artifact of a job (nothing happens if it has none)."""
        ...

    async def close(self) -> None:
        """Release connections (the store is not used after)."""
        ...
