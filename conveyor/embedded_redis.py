"""A private `redis-server` for one machine: `conveyor up`, `conveyor demo` and tests.

It listens only on a unix socket (`--port 0`), so it never clashes with another Redis
on the host and is reachable by nothing but local processes with access to the data
directory. Data lives under `<data_dir>` with AOF on, so jobs survive a restart.

The server is started by absolute path (found with `shutil.which`), tracked by pid,
and stopped by pid: SIGTERM (Redis then writes its AOF and exits), SIGKILL after a
grace period. Nothing here ever signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from conveyor.processes import pdeathsig_preexec, pid_alive

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


class EmbeddedRedisError(RuntimeError):
    """redis-server is missing, would not start, or another one owns the data dir."""


PDEATHSIG_PREEXEC = pdeathsig_preexec(signal.SIGTERM)
"""Shared with the other launchers (see clients/cli/stack.py). Call Popen with it only
from the main thread: Linux sends the signal when the *thread* that forked exits."""


class EmbeddedRedis:
    """One redis-server child process with its data in `data_dir`.

    >>> with EmbeddedRedis(Path(".conveyor/redis")) as r:
    ...     r.url  # 'unix:///abs/path/.conveyor/redis/redis.sock'
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        executable: str | None = None,
        appendonly: bool = True,
        extra_args: list[str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """`die_with_parent`: Linux SIGTERMs the server when the thread that started it
        exits (so a SIGKILLed `conveyor up` leaves no orphan). Only for a process that
        starts it from its main thread."""
        self.data_dir = Path(data_dir).resolve()
        self._executable = executable
        self._appendonly = appendonly
        self._extra_args = list(extra_args or [])
        self._die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        self._short_socket_dir: str | None = None
        self.socket_path = self.data_dir / "redis.sock"
        self.pid_file = self.data_dir / "redis.pid"
        self.log_file = self.data_dir / "redis.log"

    # --- facts ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- life ------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start redis-server and return once it answers PING on its socket."""
        if self.process is not None:
            raise EmbeddedRedisError("this embedded Redis was already started")
        exe = self._executable or shutil.which("redis-server")
        if not exe:
            raise EmbeddedRedisError(
                "redis-server not found on PATH; install it (apt-get install redis-server) "
                "or set CONVEYOR_REDIS_URL to use an existing Redis"
            )
        exe = os.path.abspath(exe)  # not resolve(): redis-server is a multi-call symlink
        if not os.access(exe, os.X_OK):
            raise EmbeddedRedisError(f"redis-server at {exe} is not an executable file")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_owned()
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            # A deep data dir would overflow sun_path: put the socket in a short
            # private directory instead (the data stays in data_dir).
            self._short_socket_dir = tempfile.mkdtemp(prefix="cv-redis-")
            self.socket_path = Path(self._short_socket_dir) / "redis.sock"
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        args = [
            exe,
            "--port", "0",
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            *self._extra_args,
        ]  # fmt: skip
        # Errors before the log file is open (a bad option) go to stderr: keep them.
        with self.log_file.open("ab") as early_log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=early_log,
                start_new_session=True,  # the terminal's Ctrl-C reaches only our owner
                preexec_fn=PDEATHSIG_PREEXEC if self._die_with_parent else None,
                close_fds=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _refuse_if_owned(self) -> None:
        """Two servers on one AOF would corrupt it: refuse while another lives."""
        try:
            other = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if other != os.getpid() and pid_alive(other) and _is_redis(other):
            raise EmbeddedRedisError(
                f"another redis-server (pid {other}) is running with data dir {self.data_dir}; "
                "stop it (is `conveyor up` already running?) or use another data dir"
            )

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            code = self.process.poll()
            if code is not None:
                raise EmbeddedRedisError(f"redis-server exited with code {code} at start: {self._failure_text()}")
            if self.socket_path.exists() and self.ping():
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"redis-server did not answer on {self.socket_path} within {timeout:.0f} s")
            time.sleep(delay)  # waiting on a child's readiness: a bounded poll
            delay = min(delay * 2, 0.1)

    def _failure_text(self) -> str:
        text = ""
        with contextlib.suppress(OSError):
            text = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
        return " ".join(text.split())[-500:] or "(no output)"

    def ping(self) -> bool:
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1.0)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM by pid (Redis persists and exits), SIGKILL after `grace` seconds.
        Returns the exit code, or None if it was never started."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if self._short_socket_dir:
            shutil.rmtree(self._short_socket_dir, ignore_errors=True)
            self._short_socket_dir = None
        return proc.returncode

    def __enter__(self) -> EmbeddedRedis:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _is_redis(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # cannot tell: assume it is, and refuse
    return b"redis" in cmdline.split(b"\0", 1)[0]
