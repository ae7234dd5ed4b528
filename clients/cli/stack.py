"""The whole system on one machine, as child processes: an embedded redis-server
(unless a Redis URL is configured), the gateway and executors. Used by `conveyor up`
and `conveyor demo`.

Children run in sessions of their own, so the terminal's Ctrl-C reaches only us and
we stop them in order: the services first (SIGTERM, SIGKILL after a grace period),
then Redis. On Linux they also get SIGTERM should we die without a chance to stop
them (PR_SET_PDEATHSIG). Every process is tracked and signalled by its pid only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypedDict

from clients.cli.admin_key import ensure_admin_key
from conveyor.embedded_redis import PDEATHSIG_PREEXEC, EmbeddedRedis
from conveyor.settings import Settings, default_executor_slots
from conveyor_client import AsyncConveyorClient, ConveyorRpcError

GATEWAY_ARGV = [sys.executable, "-m", "gateway.main"]
EXECUTOR_ARGV = [sys.executable, "-m", "executor.main"]


def client_target(addr: str) -> str:
    """The address to connect to for a listen address: a wildcard host becomes
    loopback."""
    host, sep, port = addr.rpartition(":")
    if sep and host in ("0.0.0.0", ""):
        return f"127.0.0.1:{port}"
    if sep and host in ("[::]", "::"):
        return f"[::1]:{port}"
    return addr


class ClientTls(TypedDict, total=False):
    """The SDK client's TLS arguments."""

    tls: bool
    ca_cert: str
    client_cert: str
    client_key: str


def client_tls_of(env: Mapping[str, str]) -> ClientTls:
    """How a client on this machine talks to a gateway started with `env`: plaintext,
    or, when the gateway serves TLS (CONVEYOR_TLS_CERT_FILE), TLS trusting
    CONVEYOR_CA_CERT (the CLI's own setting) or else the gateway's certificate itself (a
    self-signed one), and presenting CONVEYOR_CLIENT_CERT and _KEY when the gateway
    requires client certificates (CONVEYOR_TLS_CLIENT_CA_FILE)."""
    cert = env.get("CONVEYOR_TLS_CERT_FILE")
    if not cert:
        return {}
    tls: ClientTls = {"tls": True, "ca_cert": env.get("CONVEYOR_CA_CERT") or cert}
    if env.get("CONVEYOR_TLS_CLIENT_CA_FILE"):
        client_cert, client_key = env.get("CONVEYOR_CLIENT_CERT"), env.get("CONVEYOR_CLIENT_KEY")
        if not (client_cert and client_key):
            raise StackError(
                "the gateway requires client certificates (CONVEYOR_TLS_CLIENT_CA_FILE): set "
                "CONVEYOR_CLIENT_CERT and CONVEYOR_CLIENT_KEY for this machine's own client"
            )
        tls["client_cert"], tls["client_key"] = client_cert, client_key
    return tls


def _int_setting(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        raw = env.get(name, "").strip()
        if raw:
            try:
                return int(raw)
            except ValueError:
                return None  # the services refuse it themselves, with a clear error
    return None


def embedded_executor_slots(env: Mapping[str, str], executors: int = 1) -> int | None:
    """CONVEYOR_EXECUTOR_SLOTS for the executors of a one-machine stack, or None to
    leave the setting as the user gave it.

    On one machine the queue's limit is what runs: each of the `executors` x
    CONVEYOR_EXECUTOR_PROCESSES worker processes gets the host default
    (`default_executor_slots`) or its share of QUEUE_CONCURRENCY, whichever is more,
    so that the slots of all of them add up to at least the queue concurrency.
    An explicit CONVEYOR_EXECUTOR_SLOTS is left alone."""
    if _int_setting(env, "CONVEYOR_EXECUTOR_SLOTS") is not None:
        return None
    concurrency = _int_setting(env, "CONVEYOR_QUEUE_CONCURRENCY", "QUEUE_CONCURRENCY")
    if concurrency is None:
        concurrency = Settings.model_fields["queue_concurrency"].default
    processes = max(1, _int_setting(env, "CONVEYOR_EXECUTOR_PROCESSES") or 1)
    workers = max(1, executors) * processes
    share = -(-max(0, concurrency) // workers)  # ceiling
    return max(default_executor_slots(), share)


class StackError(RuntimeError):
    """The stack could not start, or a part of it died."""


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalStack:
    """Redis (embedded unless `redis_url`), one gateway, `executors` executors."""

    data_dir: Path
    grpc_addr: str
    redis_url: str | None = None
    executors: int = 1
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every service."""
    executor_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the executors only."""
    log_dir: Path | None = None
    """Where the services' output goes; None: our own stderr."""
    out: TextIO = field(default_factory=lambda: sys.stdout)

    #: How this stack's own client (the readiness check) talks to its gateway: the
    #: SDK's TLS arguments, set by _start from the gateway's TLS settings.
    client_tls: ClientTls = field(default_factory=ClientTls, init=False)
    redis: EmbeddedRedis | None = field(default=None, init=False)
    #: The admin key the gateway accepts (None with CONVEYOR_AUTH=off).
    api_key: str | None = field(default=None, init=False)
    children: list[Child] = field(default_factory=list, init=False)
    _exits: dict[str, asyncio.Task[str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def target(self) -> str:
        return client_target(self.grpc_addr)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def pids(self) -> dict[str, int]:
        out = {c.name: c.pid for c in self.children}
        if self.redis is not None and self.redis.pid is not None:
            out["redis-server"] = self.redis.pid
        return out

    # --- start -------------------------------------------------------------------------
    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start everything and return once the gateway's health is SERVING.
        On failure, whatever was started is stopped again before StackError."""
        try:
            await self._start(ready_timeout)
        except BaseException:
            await self.stop(grace=5.0, quiet=True)
            raise

    async def _start(self, ready_timeout: float) -> None:
        _check_free(self.grpc_addr)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CONVEYOR_DATA_DIR": str(self.data_dir), **self.env}
        env["CONVEYOR_GRPC_ADDR"] = self.grpc_addr
        if env.get("CONVEYOR_AUTH", "on") != "off":
            # Safe and easy: auth on, with an admin key made on first start and kept here.
            env.setdefault("CONVEYOR_ADMIN_KEY", ensure_admin_key(self.data_dir))
            self.api_key = env["CONVEYOR_ADMIN_KEY"]
        self.client_tls = client_tls_of(env)
        if self.redis_url:
            env["CONVEYOR_REDIS_URL"] = self.redis_url
        else:
            self.redis = EmbeddedRedis(self.data_dir / "redis", die_with_parent=True)
            try:
                self.redis.start()
            except Exception as err:
                raise StackError(str(err)) from err
            env["CONVEYOR_REDIS_URL"] = self.redis.url
            self.say(f"redis-server  pid {self.redis.pid:<7} {self.redis.url}  (AOF on)")
            self._exits["redis-server"] = asyncio.create_task(self._redis_exit())

        await self._spawn("gateway", GATEWAY_ARGV, env)
        executor_env = {**env, **self.executor_env}
        slots = embedded_executor_slots(executor_env, self.executors)
        if slots is not None:
            executor_env["CONVEYOR_EXECUTOR_SLOTS"] = str(slots)
        for i in range(self.executors):
            name = "executor" if self.executors == 1 else f"executor-{i + 1}"
            await self._spawn(name, EXECUTOR_ARGV, executor_env)
        if slots is not None:
            self.say(f"executor slots: {slots} per worker process (enough for the queue concurrency; "
                     "CONVEYOR_EXECUTOR_SLOTS overrides)")
        await self._wait_serving(ready_timeout)

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
        with contextlib.ExitStack() as files:
            sink = files.enter_context(log_path.open("ab")) if log_path else None
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink if sink else None,
                stderr=asyncio.subprocess.STDOUT if sink else None,
                start_new_session=True,
                # Called from the event loop's (main) thread; see PDEATHSIG_PREEXEC.
                preexec_fn=PDEATHSIG_PREEXEC,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        self._exits[name] = asyncio.create_task(self._child_exit(child))
        self.say(f"{name:<13} pid {proc.pid}")
        return child

    async def _child_exit(self, child: Child) -> str:
        await child.proc.wait()
        return child.name

    async def _redis_exit(self) -> str:
        assert self.redis is not None and self.redis.process is not None
        await asyncio.to_thread(self.redis.process.wait)
        return "redis-server"

    async def _wait_serving(self, limit: float) -> None:
        async def serving() -> None:
            # Retry the connection quickly: the gateway is expected up within seconds.
            fast = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
            async with AsyncConveyorClient(self.target, timeout=1.0, options=fast, **self.client_tls) as client:
                while True:
                    try:
                        if await client.health() == "SERVING":
                            return
                    except ConveyorRpcError:
                        pass
                    await asyncio.sleep(0.1)  # readiness poll of a child, bounded below

        ready = asyncio.create_task(serving())
        died = asyncio.create_task(self.first_exit())
        try:
            done, _ = await asyncio.wait({ready, died}, timeout=limit, return_when="FIRST_COMPLETED")
        finally:
            for task in (ready, died):
                task.cancel()
        if ready in done:
            return
        if died in done:
            raise StackError(self.describe_exit(died.result()))
        raise StackError(f"the gateway was not SERVING on {self.target} within {limit:.0f} s")

    # --- running -----------------------------------------------------------------------
    async def first_exit(self) -> str:
        """Wait until any part of the stack exits; return its name."""
        done, _ = await asyncio.wait(set(self._exits.values()), return_when="FIRST_COMPLETED")
        return next(iter(done)).result()

    def describe_exit(self, name: str) -> str:
        if name == "redis-server":
            assert self.redis is not None and self.redis.process is not None
            code = self.redis.process.returncode
            return f"redis-server (pid {self.redis.pid}) exited with {_exit_text(code)}; see {self.redis.log_file}"
        child = next(c for c in self.children if c.name == name)
        text = f"{name} (pid {child.pid}) exited with {_exit_text(child.proc.returncode)}"
        tail = child.log_tail()
        if tail:
            text += f"; last lines of {child.log_path}:\n{tail}"
        return text

    # --- stop --------------------------------------------------------------------------
    async def stop(self, grace: float = 20.0, *, force: asyncio.Event | None = None, quiet: bool = False) -> None:
        """SIGTERM the services, SIGKILL whichever still runs after `grace` seconds (or
        at once when `force` is set), then stop Redis."""
        say: Callable[[str], None] = (lambda _: None) if quiet else self.say
        alive = [c for c in self.children if c.proc.returncode is None]
        if alive:
            say("stopping " + ", ".join(f"{c.name} (pid {c.pid})" for c in alive))
        for child in alive:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        if alive:
            all_exited = asyncio.ensure_future(asyncio.gather(*(c.proc.wait() for c in alive)))
            watch: set[asyncio.Future[Any]] = {all_exited}
            forced = asyncio.ensure_future(force.wait()) if force else None
            if forced:
                watch.add(forced)
            await asyncio.wait(watch, timeout=grace, return_when="FIRST_COMPLETED")
            if forced:
                forced.cancel()
            for child in alive:
                if child.proc.returncode is None:
                    say(f"{child.name} (pid {child.pid}) did not stop in time: SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.kill()
            await all_exited
            for child in alive:
                say(f"{child.name} stopped ({_exit_text(child.proc.returncode)})")
        if self.redis is not None and self.redis.running:
            code = await asyncio.to_thread(self.redis.stop)
            say(f"redis-server stopped ({_exit_text(code)})")
        for task in self._exits.values():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._exits.values(), return_exceptions=True)


def _check_free(addr: str) -> None:
    """Refuse a listen address already in use. gRPC servers set SO_REUSEPORT, so a
    second gateway could bind the same port and share it with the first; a probe
    socket without that option fails to bind instead."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as err:
        raise StackError(f"cannot listen on {addr!r}: {err}") from err
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as err:
            raise StackError(
                f"cannot listen on {addr}: {err.strerror} (is another gateway running? "
                "set CONVEYOR_GRPC_ADDR or --grpc-addr)"
            ) from err


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
