"""Artifacts in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...), so that
executors on many hosts write them and any gateway streams them back.

    CONVEYOR_ARTIFACTS_URL=s3://bucket/some/prefix

Each artifact is one object, `<prefix>/<job_id>/<name>`, with its content type as the
object's Content-Type. Reads stream the object's body in chunks (the gateway holds one
chunk at a time, never the whole file); a job's artifacts are deleted by listing its
key prefix (the gateway's janitor, when retention or CleanQueue deletes the job).

The client is aiobotocore's (botocore's async form), so credentials, region and
endpoint come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, an instance or pod role; AWS_REGION,
AWS_ENDPOINT_URL_S3), unless CONVEYOR_ARTIFACTS_S3_ENDPOINT_URL / _REGION /
_ADDRESSING_STYLE say otherwise. The bucket must exist; Conveyor never creates one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from conveyor.artifact_stores.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidArtifactPath,
    S3Location,
    check_artifact_name,
    check_job_id,
    not_found,
)
from conveyor.errors import ConveyorError, Unavailable

log = structlog.get_logger("conveyor.artifacts.s3")

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
#: DeleteObjects takes at most this many keys per call (the S3 API's limit).
_DELETE_BATCH = 1000


class S3ArtifactStore:
    """Artifacts as objects under `s3://bucket/<prefix>/<job_id>/<name>`."""

    def __init__(self, url: str, *, endpoint_url: str = "", region: str = "", addressing_style: str = "auto",
                 max_connections: int = 16) -> None:
        self.location = S3Location.parse(url)
        self._client_args: dict[str, Any] = {
            "config": AioConfig(
                max_pool_connections=max_connections,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": addressing_style},
                connect_timeout=10,
                read_timeout=60,
            ),
        }
        if endpoint_url:
            self._client_args["endpoint_url"] = endpoint_url
        if region:
            self._client_args["region_name"] = region
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock: asyncio.Lock | None = None

    def _key(self, job_id: str, name: str) -> str:
        return f"{self._job_prefix(job_id)}{check_artifact_name(name)}"

    def _job_prefix(self, job_id: str) -> str:
        return f"{self.location.prefix}{check_job_id(job_id)}/"

    def _read_key(self, job_id: str, name: str) -> str:
        """The key to read; a name that could not have been stored is simply not found."""
        try:
            return self._key(job_id, name)
        except InvalidArtifactPath:
            raise not_found(job_id, name) from None

    async def _s3(self) -> Any:
        """The client, made on first use inside the running event loop (aiohttp's
        sessions belong to one loop)."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                session = get_session()
                self._client = await self._exit.enter_async_context(session.create_client("s3", **self._client_args))
        return self._client

    async def put(self, job_id: str, name: str, data: bytes, content_type: str) -> None:
        key = self._key(job_id, name)
        s3 = await self._s3()
        try:
            await s3.put_object(Bucket=self.location.bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("store", key, exc) from exc

    async def stat(self, job_id: str, name: str) -> tuple[int, str]:
        key = self._read_key(job_id, name)
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.location.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _read_error(exc, job_id, name, key) from exc
        return int(head["ContentLength"]), str(head.get("ContentType") or "application/octet-stream")

    async def iter_chunks(
        self, job_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        key = self._read_key(job_id, name)
        s3 = await self._s3()
        try:
            got = await s3.get_object(Bucket=self.location.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _read_error(exc, job_id, name, key) from exc
        async with got["Body"] as body:
            # Chunks as they arrive off the socket, each at most chunk_size bytes.
            async for chunk in body.iter_chunks(chunk_size):
                if chunk:
                    yield chunk

    async def delete_job(self, job_id: str) -> None:
        try:
            prefix = self._job_prefix(job_id)
        except InvalidArtifactPath:
            return  # no artifact could have been stored under it
        s3 = await self._s3()
        try:
            paginator = s3.get_paginator("list_objects_v2")
            keys: list[dict[str, str]] = []
            async for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                keys += [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for start in range(0, len(keys), _DELETE_BATCH):
                await s3.delete_objects(Bucket=self.location.bucket,
                                        Delete={"Objects": keys[start:start + _DELETE_BATCH], "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete", prefix, exc) from exc

    async def close(self) -> None:
        await self._exit.aclose()
        self._client = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read_error(exc: ClientError | BotoCoreError, job_id: str, name: str, key: str) -> ConveyorError:
    """A failed read: NOT_FOUND when the object (or its bucket) is not there, else the
    store is UNAVAILABLE."""
    if isinstance(exc, ClientError) and _code(exc) in _MISSING:
        return not_found(job_id, name)
    return _unavailable("read", key, exc)


def _unavailable(what: str, key: str, exc: Exception) -> Unavailable:
    log.warning("s3 artifact store error", action=what, key=key, error=str(exc)[:300])
    return Unavailable(f"the artifact store could not {what} {key!r}: {exc}", reason="ARTIFACT_STORE_UNAVAILABLE")
