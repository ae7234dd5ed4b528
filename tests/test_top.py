"""`conveyor top` in a real terminal (tmux: send-keys, capture-pane) against a real
gateway and executor: a queue's counts change on screen as its jobs run, and q or
Ctrl-C quit it (exit 0). The tmux server is one of the test's own (its own socket),
stopped at the end."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from conveyor.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.processes import ROOT, Stack, stack_env, wait_for

WAIT_S = 30.0


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("top")
    s = Stack(redis_url, stack_env(redis_url, data, CONVEYOR_DASHBOARD_ADDR="off"), data / "logs")
    try:
        s.start_gateway()
        s.start_executor(CONVEYOR_EXECUTOR_SLOTS="4")
        yield s
    finally:
        s.print_problems()
        s.stop()


class Terminal:
    """A tmux server of this test's own, with one window running a command."""

    def __init__(self, command: str) -> None:
        self.socket = f"cvtop-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-x", "190", "-y", "50", "-s", "top",
                  f"{command}; echo TOP-EXITED $?; sleep 120")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True,
                              capture_output=True, text=True,
                              timeout=15).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait(self, predicate: Callable[[str], bool], what: str) -> str:
        shown = [""]

        def check() -> bool:
            shown[0] = self.screen()
            return predicate(shown[0])

        try:
            wait_for(check, WAIT_S, what, interval=0.1)
        except TimeoutError:
            raise AssertionError(f"{what}; the screen:\n{shown[0]}") from None
        return shown[0]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True, timeout=15)


def counts(screen: str, queue: str) -> dict[str, int] | None:
    """The queue's row of the Queues table, by column header."""
    header = next((line for line in screen.splitlines() if "WAITING" in line and "COMPLETED" in line), None)
    row = next((line for line in screen.splitlines() if line.startswith(f"│ {queue} ")), None)
    if header is None or row is None:
        return None
    names = [c.strip() for c in header.strip("┃").split("┃")]
    cells = [c.strip() for c in row.strip("│").split("│")]
    return {n.lower(): int(v) for n, v in zip(names, cells, strict=False)
            if n.lower() in ("waiting", "delayed", "active", "completed", "failed", "cancelled")}


def top_command(stack: Stack, queue: str) -> str:
    argv = [sys.executable, "-m", "clients.cli.main", "top", "--target", stack.grpc_target, "--queue", queue]
    # The terminal's own size, not one the test runner may have put in the environment.
    return f"cd {shlex.quote(str(ROOT))} && env -u COLUMNS -u LINES " + " ".join(shlex.quote(a) for a in argv)


def test_top_shows_a_queues_counts_change_as_jobs_run(stack: Stack) -> None:
    queue = f"top-{uuid.uuid4().hex[:6]}"
    term = Terminal(top_command(stack, queue))
    try:
        term.wait(lambda s: "Queues" in s and "Running jobs" in s and "q quits" in s, "top's first screen")
        with grpc.insecure_channel(stack.grpc_target) as channel:
            jobs = job_service_pb2_grpc.JobServiceStub(channel)
            request = job_service_pb2.SubmitJobRequest(queue=queue)
            request.noop.sleep.FromMilliseconds(2500)
            jobs.SubmitJobs(job_service_pb2.SubmitJobsRequest(requests=[request] * 6), timeout=30)
        # 4 slots: first some run and some wait ...
        seen_running = term.wait(lambda s: (c := counts(s, queue)) is not None and c["active"] > 0
                                 and c["completed"] < 6, "the queue's jobs running")
        assert counts(seen_running, queue)["completed"] < 6  # type: ignore[index]
        assert queue in seen_running.split("Running jobs", 1)[1]  # listed among the running jobs
        # ... then all of them are done, on the same screen, without a key pressed.
        done = term.wait(lambda s: (c := counts(s, queue)) is not None and c["completed"] == 6 and c["active"] == 0
                         and c["waiting"] == 0, "all six completed")
        # From the stream: each job's events (in line, started, completed) are followed.
        # The counts are polled and the events streamed: the last events may show a
        # refresh after the counts do.
        followed = term.wait(lambda s: (m := re.search(r"(\d+) events followed", s)) is not None
                             and int(m.group(1)) >= 18, "all 18 events followed")
        assert counts(followed, queue) == counts(done, queue), followed
        term.tmux("send-keys", "-t", "top", "q")
        term.wait(lambda s: "TOP-EXITED 0" in s, "top to quit on q with exit 0")
    finally:
        term.close()


def test_top_quits_on_ctrl_c(stack: Stack) -> None:
    term = Terminal(top_command(stack, "default"))
    try:
        term.wait(lambda s: "q quits" in s, "top's first screen")
        term.tmux("send-keys", "-t", "top", "C-c")
        term.wait(lambda s: "TOP-EXITED 0" in s, "top to quit on Ctrl-C with exit 0")
    finally:
        term.close()

