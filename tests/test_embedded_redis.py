"""The embedded redis-server of `conveyor up`: a real server on a unix socket, AOF on,
stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from conveyor.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from conveyor.processes import pid_alive

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_start_ping_stop_by_pid(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    pid = server.pid
    assert pid is not None and pid_alive(pid)
    assert server.url == f"unix://{tmp_path.resolve() / 'redis' / 'redis.sock'}"
    assert server.socket_path.is_socket()

    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
        client.set("conveyor:test", "kept")
        # Only the socket: the server listens on no TCP port at all.
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()

    assert server.stop() == 0
    assert not pid_alive(pid)
    aof_dir = tmp_path / "redis" / "appendonlydir"
    assert aof_dir.is_dir()
    assert any(p.name.endswith(".manifest") for p in aof_dir.iterdir())
    assert any(p.name.endswith(".incr.aof") for p in aof_dir.iterdir())


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        client = redis.Redis.from_url(first.url)
        client.set("job", "42")
        client.close()
    with EmbeddedRedis(tmp_path) as second:
        client = redis.Redis.from_url(second.url)
        assert client.get("job") == b"42"
        client.close()


def test_refuses_a_data_dir_owned_by_a_live_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        assert first.pid is not None
        with pytest.raises(EmbeddedRedisError, match=f"pid {first.pid}"):
            EmbeddedRedis(tmp_path).start()
        assert first.ping()  # the refusal did not disturb the owner


def test_a_stale_pid_file_does_not_block_a_start(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path).start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # leaves redis.pid and redis.sock behind
    assert server.process is not None
    server.process.wait(10)
    assert (tmp_path / "redis.pid").exists()
    with EmbeddedRedis(tmp_path) as again:
        assert again.ping()


def test_a_bad_option_is_reported_with_the_servers_words(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="exited with code"):
        EmbeddedRedis(tmp_path, extra_args=["--no-such-option", "1"]).start(timeout=10)


def test_a_long_data_dir_still_gets_a_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep).start()
    try:
        assert len(str(server.socket_path)) < 108
        assert server.ping()
    finally:
        server.stop()
    assert (deep / "appendonlydir").is_dir()
    assert not server.socket_path.parent.exists()


def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, executable=str(tmp_path / "nope"))
    with pytest.raises(EmbeddedRedisError, match="not an executable"):
        server.start()


def test_die_with_parent_leaves_no_orphan(tmp_path: Path) -> None:
    """A SIGKILLed owner (say `conveyor up`) takes its redis-server with it."""
    script = (
        "import sys, time\n"
        "from conveyor.embedded_redis import EmbeddedRedis\n"
        f"r = EmbeddedRedis({str(tmp_path)!r}, die_with_parent=True).start()\n"
        "print(r.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert pid_alive(pid)
    finally:
        owner.kill()
        owner.wait(10)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)
