"""Real processes for tests: redis-server, the gateway, the executor. Each is
started by the test run, tracked by pid and stopped by pid; output goes to a log
file that is printed when a test fails to start one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.redis_connection import connect_sync

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return Process(name, proc, log_path)


def start_redis(tmp: Path, *, port: int | None = None, appendonly: bool = False,
                extra: Sequence[str] = ()) -> tuple[Process, str]:
    """A redis-server on loopback with its files in `tmp`; with `appendonly`, an AOF
    fsynced on every write, so that one started again on the same port and `tmp`
    comes back with everything; `extra`, more of its command-line options."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
            "--dir", str(tmp), "--maxclients", "20000", *extra]
    p = spawn("redis", argv, dict(os.environ), tmp)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            if not p.alive():
                raise RuntimeError(f"redis-server exited:\n{p.log()}") from None
            return False

    wait_for(up, 10, "redis-server")
    client.close()
    return p, url


@dataclass
class Stack:
    """A gateway and executors on one Redis, under a key prefix of their own."""

    redis_url: str
    env: dict[str, str]
    log_dir: Path
    gateways: list[Process] = field(default_factory=list)
    gateway_targets: list[str] = field(default_factory=list)
    executors: list[Process] = field(default_factory=list)

    @property
    def gateway(self) -> Process | None:
        return self.gateways[0] if self.gateways else None

    @property
    def grpc_target(self) -> str:
        return self.env["CONVEYOR_GRPC_ADDR"]

    @property
    def prefix(self) -> str:
        return self.env["CONVEYOR_KEY_PREFIX"]

    def redis(self) -> redis.Redis:
        return connect_sync(self.redis_url)  # a redis+sentinel:// URL too: its primary

    def start_gateway(self, credentials: grpc.ChannelCredentials | None = None, **extra_env: str) -> Process:
        """A gateway of this stack, SERVING (its health, over TLS with `credentials`)
        before this returns; stopped by pid with the stack, even if it never serves."""
        env = {**self.env, **extra_env}
        p = spawn("gateway", [sys.executable, "-m", "gateway.main"], env, self.log_dir)
        self.gateways.append(p)
        target = env["CONVEYOR_GRPC_ADDR"]

        def serving() -> bool:
            if not p.alive():
                raise RuntimeError(f"gateway exited:\n{p.log()}")
            with (grpc.secure_channel(target, credentials) if credentials is not None
                  else grpc.insecure_channel(target)) as ch:
                try:
                    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    return bool(r.status == health_pb2.HealthCheckResponse.SERVING)
                except grpc.RpcError:
                    return False

        wait_for(serving, 30, "gateway health SERVING" + (" over TLS" if credentials else ""), interval=0.1)
        self.gateway_targets.append(target)
        return p

    def start_second_gateway(self) -> str:
        """Another gateway on the same Redis and prefix; returns its address."""
        addr = f"127.0.0.1:{free_port()}"
        self.start_gateway(CONVEYOR_GRPC_ADDR=addr)
        return addr

    def executor_ids(self) -> list[str]:
        with self.redis() as r:
            now = int(time.time() * 1000)
            return [m.decode() for m in r.zrangebyscore(f"{self.prefix}:executors", now, "+inf")]

    def start_executor(self, *, wait: bool = True, **extra_env: str) -> Process:
        env = {**self.env, **extra_env}
        before = set(self.executor_ids())
        p = spawn("executor", [sys.executable, "-m", "executor.main"], env, self.log_dir)
        if wait:
            processes = int(env.get("CONVEYOR_EXECUTOR_PROCESSES", "1"))

            def registered() -> bool:
                if not p.alive():
                    raise RuntimeError(f"executor exited:\n{p.log()}")
                return len(set(self.executor_ids()) - before) >= processes

            wait_for(registered, 60, "executor registration", interval=0.1)
        self.executors.append(p)
        return p

    def stop(self) -> None:
        for p in [*self.executors, *self.gateways]:
            p.stop()

    def print_problems(self) -> None:
        """Print the services' warning and error lines (pytest shows them when a test fails)."""
        for p in [*self.gateways, *self.executors]:
            for line in p.log().splitlines():
                if '"level": "error"' in line or '"level": "warning"' in line or "Traceback" in line:
                    print(f"[{p.name} {p.pid}] {line[:3000]}")


def stack_env(redis_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "CONVEYOR_KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "CONVEYOR_DATA_DIR": str(data_dir),
        "CONVEYOR_LOG_LEVEL": "INFO",
        "CONVEYOR_RETRY_BASE_SECONDS": "0.2",
        "CONVEYOR_WATCH_HEARTBEAT_SECONDS": "1",
        "CONVEYOR_ALLOWED_HOSTS": "127.0.0.1",
        "CONVEYOR_EXECUTOR_SLOTS": "4",
        # Loopback test stacks run without auth unless a test turns it on (test_auth.py).
        "CONVEYOR_AUTH": "off",
        # Test gateways serve no web dashboard unless a test asks (test_dashboard.py).
        "CONVEYOR_DASHBOARD_ADDR": "off",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_stack(redis_url: str, data_dir: Path, *, executor: bool = True, **env: str) -> Iterator[Stack]:
    """A gateway (and an executor) with `stack_env(**env)`, stopped at the end, its logs'
    problems printed."""
    stack = Stack(redis_url, stack_env(redis_url, data_dir, **env), data_dir / "logs")
    try:
        stack.start_gateway()
        if executor:
            stack.start_executor()
        yield stack
    finally:
        stack.stop()
        stack.print_problems()
