"""Artifacts in an S3-compatible store (CONVEYOR_ARTIFACTS_URL=s3://bucket/prefix).

The S3 server is moto's standalone server (`moto[server]`, ThreadedMotoServer on
127.0.0.1): the most faithful S3-compatible server that installs here (from PyPI, no
download at run time; MinIO is in neither registry, LocalStack's S3 is moto, and
Debian's radosgw needs a Ceph cluster). It speaks the S3 REST API over real HTTP
(SigV4 auth headers, PutObject/HeadObject/GetObject/ListObjectsV2/DeleteObjects, S3's
XML errors), so the real aiobotocore client is exercised end to end. It is NOT AWS:
no IAM policy is enforced, any credentials pass, and consistency and limits are moto's.

A real gateway and a real executor process, both pointed at the bucket, run a real
Chromium browser job that takes a screenshot; a SECOND gateway process streams it
back through GetArtifact, byte for byte; nothing lands in the local artifacts dir;
a missing object is NOT_FOUND; CleanQueue's janitor deletes the job's objects.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from google.protobuf import duration_pb2
from moto.server import ThreadedMotoServer

from conveyor.artifacts import DEFAULT_CHUNK_SIZE, ArtifactStore, open_artifact_store
from conveyor.errors import NotFound, Unavailable
from conveyor.settings import Settings
from conveyor.v1 import job_pb2, job_service_pb2, queue_service_pb2
from conveyor.v1.job_service_pb2_grpc import JobServiceStub
from conveyor.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.support.grpc_helpers import submit_request, unique_queue, wait_state
from tests.support.page_server import serve_page
from tests.support.processes import Stack, free_port

pb, qpb = job_service_pb2, queue_service_pb2

BUCKET = "conveyor-artifacts"
AWS_ENV = {  # moto takes any credentials; these only keep botocore off any real account
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
PAGE = b"<html><body style='background:#3a6'><h1 id='t'>artifact in S3</h1></body></html>"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with serve_page(PAGE, "/page.html") as url:
        yield url


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def keys(endpoint: str, prefix: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed]


def objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys(endpoint, prefix)}


@pytest.fixture
async def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ArtifactStore]:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    store = open_artifact_store(Settings(artifacts_url=f"s3://{BUCKET}/unit-{uuid.uuid4().hex[:6]}",
                                         artifacts_s3_endpoint_url=s3_endpoint))
    yield store
    await store.close()


async def test_the_s3_store_puts_streams_in_chunks_replaces_and_deletes(s3_store: ArtifactStore) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes: several chunks
    await s3_store.put("job-1", "shot-1.png", data, "image/png")
    await s3_store.put("job-1", "trace-1.zip", b"zip", "application/zip")
    await s3_store.put("job-2", "shot-1.png", b"other", "image/png")
    assert await s3_store.stat("job-1", "shot-1.png") == (len(data), "image/png")
    chunks = [c async for c in s3_store.iter_chunks("job-1", "shot-1.png", chunk_size=DEFAULT_CHUNK_SIZE)]
    assert b"".join(chunks) == data
    assert len(chunks) >= len(data) // DEFAULT_CHUNK_SIZE and max(map(len, chunks)) <= DEFAULT_CHUNK_SIZE

    await s3_store.put("job-1", "trace-1.zip", b"newer", "application/zip")
    assert [c async for c in s3_store.iter_chunks("job-1", "trace-1.zip")] == [b"newer"]

    for job_id, name in (("job-1", "nope.png"), ("job-9", "shot-1.png"), ("job-1", "../job-2/shot-1.png")):
        with pytest.raises(NotFound):
            await s3_store.stat(job_id, name)
        with pytest.raises(NotFound):
            _ = [c async for c in s3_store.iter_chunks(job_id, name)]

    await s3_store.delete_job("job-1")
    with pytest.raises(NotFound):
        await s3_store.stat("job-1", "shot-1.png")
    assert await s3_store.stat("job-2", "shot-1.png") == (5, "image/png")  # another job's stay


async def test_a_browser_screenshot_is_stored_in_s3_and_streamed_by_another_gateway(
    make_stack: Callable[..., Stack], s3_endpoint: str, page_url: str, tmp_path: Path
) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:6]}"
    stack = make_stack(CONVEYOR_ARTIFACTS_URL=f"s3://{BUCKET}/{prefix}", CONVEYOR_ARTIFACTS_S3_ENDPOINT_URL=s3_endpoint,
                       CONVEYOR_BROWSER_SLOTS="1", **AWS_ENV)
    stack.start_gateway()
    stack.start_executor()
    other = stack.start_second_gateway()
    local_dir = Path(stack.env["CONVEYOR_DATA_DIR"]) / "artifacts"
    queue = unique_queue("s3")

    async with grpc.aio.insecure_channel(stack.grpc_target) as ch1, grpc.aio.insecure_channel(other) as ch2:
        first, second = JobServiceStub(ch1), JobServiceStub(ch2)
        sub = await first.SubmitJob(submit_request({"queue": queue, "browser": {"steps": [
            {"navigate": {"url": page_url}}, {"screenshot": {"fullPage": True}}]}}))
        job = await wait_state(first, sub.id, {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED}, timeout=90)
        assert job.state == job_pb2.JOB_STATE_COMPLETED, job.error.message
        (artifact,) = job.result.artifacts
        assert artifact.content_type == "image/png" and artifact.size_bytes > 0

        # The object in the bucket, where the URL says, and nothing on local disk.
        stored = objects(s3_endpoint, f"{prefix}/{sub.id}/")
        assert list(stored) == [f"{prefix}/{sub.id}/{artifact.name}"]
        assert not local_dir.exists() or not any(local_dir.rglob("*"))

        # Streamed by the other gateway process, byte for byte.
        chunks = [c async for c in second.GetArtifact(pb.GetArtifactRequest(job_id=sub.id, name=artifact.name))]
        data = b"".join(c.data for c in chunks)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert data == stored[f"{prefix}/{sub.id}/{artifact.name}"]
        assert len(data) == artifact.size_bytes == chunks[0].size_bytes
        assert chunks[0].content_type == "image/png"

        # A name the job has no object for: NOT_FOUND, from either gateway.
        for stub in (first, second):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                _ = [c async for c in stub.GetArtifact(pb.GetArtifactRequest(job_id=sub.id, name="screenshot-9.png"))]
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # Cleaning the job deletes its objects (a gateway's janitor, within a few seconds).
        queues = QueueServiceStub(ch2)
        cleaned = await queues.CleanQueue(qpb.CleanQueueRequest(
            queue=queue, state=job_pb2.JOB_STATE_COMPLETED, older_than=duration_pb2.Duration(), limit=10))
        assert cleaned.deleted == 1
        # (Listing only: the janitor may delete an object between a listing and a read.)
        for _ in range(200):
            if not keys(s3_endpoint, f"{prefix}/{sub.id}/"):
                break
            await asyncio.sleep(0.1)
        assert not keys(s3_endpoint, f"{prefix}/{sub.id}/"), "the cleaned job's objects are still in the bucket"


async def test_an_unreachable_s3_store_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    store = open_artifact_store(Settings(artifacts_url=f"s3://{BUCKET}/x",
                                         artifacts_s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(Unavailable) as err:
            await store.stat("job-1", "shot-1.png")
        assert err.value.reason == "ARTIFACT_STORE_UNAVAILABLE"
        with pytest.raises(Unavailable):
            await store.put("job-1", "shot-1.png", b"png", "image/png")
    finally:
        await store.close()
