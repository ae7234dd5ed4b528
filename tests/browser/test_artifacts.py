"""The local artifact store: put, stat, chunked reads, deletion with the job, and
names that cannot leave the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.artifacts import ArtifactStore, InvalidArtifactPath, LocalArtifactStore
from conveyor.errors import NotFound


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def read_all(store: LocalArtifactStore, job_id: str, name: str, chunk_size: int) -> list[bytes]:
    return [chunk async for chunk in store.iter_chunks(job_id, name, chunk_size=chunk_size)]


async def test_put_stat_and_read_in_chunks(store: LocalArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)
    data = bytes(range(256)) * 40  # 10240 bytes
    await store.put("job-1", "step-03-screenshot.png", data, "image/png")
    assert await store.stat("job-1", "step-03-screenshot.png") == (len(data), "image/png")
    chunks = await read_all(store, "job-1", "step-03-screenshot.png", 4096)
    assert [len(c) for c in chunks] == [4096, 4096, 2048]
    assert b"".join(chunks) == data


async def test_put_replaces(store: LocalArtifactStore) -> None:
    await store.put("job-1", "a.txt", b"first", "text/plain")
    await store.put("job-1", "a.txt", b"second!", "application/octet-stream")
    assert await store.stat("job-1", "a.txt") == (7, "application/octet-stream")
    assert await read_all(store, "job-1", "a.txt", 1024) == [b"second!"]


async def test_empty_artifact(store: LocalArtifactStore) -> None:
    await store.put("job-1", "empty.bin", b"", "application/octet-stream")
    assert await store.stat("job-1", "empty.bin") == (0, "application/octet-stream")
    assert await read_all(store, "job-1", "empty.bin", 1024) == []


async def test_missing_artifacts_are_not_found(store: LocalArtifactStore) -> None:
    await store.put("job-1", "a.txt", b"x", "text/plain")
    for job_id, name in [("job-1", "b.txt"), ("job-2", "a.txt")]:
        with pytest.raises(NotFound):
            await store.stat(job_id, name)
        with pytest.raises(NotFound):
            await read_all(store, job_id, name, 1024)


@pytest.mark.parametrize(
    ("job_id", "name"),
    [
        ("job-1", "../job-2/a.txt"),
        ("job-1", "../../etc/passwd"),
        ("job-1", ".a.txt.content-type"),
        ("job-1", "sub/a.txt"),
        ("..", "job-1"),
        ("job-1/..", "a.txt"),
        ("/etc", "passwd"),
        ("", "a.txt"),
        ("job-1", ""),
    ],
)
async def test_names_cannot_escape_the_root(
    store: LocalArtifactStore, tmp_path: Path, job_id: str, name: str
) -> None:
    await store.put("job-2", "a.txt", b"secret", "text/plain")
    with pytest.raises(InvalidArtifactPath):
        await store.put(job_id, name, b"x", "text/plain")
    with pytest.raises(NotFound):
        await store.stat(job_id, name)
    with pytest.raises(NotFound):
        await read_all(store, job_id, name, 1024)
    assert entries(tmp_path) == ["artifacts"]


async def test_delete_job_removes_its_artifacts_only(store: LocalArtifactStore, tmp_path: Path) -> None:
    await store.put("job-1", "a.png", b"1", "image/png")
    await store.put("job-1", "b.png", b"2", "image/png")
    await store.put("job-2", "a.png", b"3", "image/png")
    await store.delete_job("job-1")
    with pytest.raises(NotFound):
        await store.stat("job-1", "a.png")
    assert await store.stat("job-2", "a.png") == (1, "image/png")
    assert not (tmp_path / "artifacts" / "job-1").exists()
    await store.delete_job("job-1")  # again: nothing to do
    await store.delete_job("never-existed")
    await store.delete_job("../artifacts")  # refused silently: nothing was stored there
    assert (tmp_path / "artifacts" / "job-2" / "a.png").exists()
