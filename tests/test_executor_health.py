"""The executor's HTTP health endpoint (CONVEYOR_EXECUTOR_METRICS_ADDR), on a real
executor process and a Redis of the test's own: liveness, readiness following the
store (down, then back), and the metrics directory gone when the executor stops."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import ROOT, Stack, free_port, stack_env, start_redis, wait_for


def compose_check(port: int) -> int:
    """docker-compose.yml's executor healthcheck, run here against `port`: its exit code."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    executor = compose["services"]["executor"]
    addr = executor["environment"]["CONVEYOR_EXECUTOR_METRICS_ADDR"]
    test = executor["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    compose_port = addr.rsplit(":", 1)[1]
    assert f"127.0.0.1:{compose_port}/readyz" in code
    script = code.replace(f":{compose_port}/", f":{port}/")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30, check=False).returncode


def get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def test_liveness_and_readiness_follow_the_store(tmp_path: Path) -> None:
    redis_port = free_port()
    redis_proc, url = start_redis(tmp_path / "redis", port=redis_port)
    port = free_port()
    stack = Stack(url, stack_env(url, tmp_path / "data", CONVEYOR_EXECUTOR_METRICS_ADDR=str(port),
                                 CONVEYOR_EXECUTOR_PROCESSES="2"), tmp_path / "logs")
    try:
        executor = stack.start_executor()
        metrics_dir = tmp_path / "data" / "metrics" / f"executor-{executor.pid}"
        assert metrics_dir.is_dir()
        status, alive = get(port, "/healthz")
        assert status == 200 and alive["status"] == "alive" and alive["workers"] == 2
        wait_for(lambda: get(port, "/readyz")[0] == 200, 20, "readiness")
        status, ready = get(port, "/readyz")
        assert ready["status"] == "ready" and sorted(ready["registered"]) == sorted(ready["workers"])
        assert len(ready["workers"]) == 2 and ready["problems"] == []
        assert get(port, "/nothing")[0] == 404
        assert get(port, "/readyz", method="POST")[0] == 405
        assert get(port, "/readyz", method="HEAD")[0] == 200
        assert compose_check(port) == 0

        redis_proc.stop()  # the store goes away: not ready, still alive
        wait_for(lambda: get(port, "/readyz")[0] == 503, 20, "not ready without the store")
        status, not_ready = get(port, "/readyz")
        assert not_ready["status"] == "not ready" and "store unreachable" in not_ready["problems"][0]
        assert get(port, "/healthz")[0] == 200
        assert compose_check(port) != 0  # compose sees the container unhealthy

        redis_proc, _ = start_redis(tmp_path / "redis", port=redis_port)  # back: the workers register again
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "ready again once the store is back")
    finally:
        stack.stop()
        redis_proc.stop()
    assert stack.executors[0].proc.returncode == 0
    assert not metrics_dir.exists()  # the workers' metric files go with the executor
