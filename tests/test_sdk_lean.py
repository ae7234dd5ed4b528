"""The lean Python SDK (clients/python, the `conveyor-client` distribution): what
`pip install ./clients/python` puts into a fresh venv (the client and the generated
stubs, nothing of the service), the README's examples run with that venv's python
against a real gateway and executor, and the blocking client being the asyncio one
generated (same methods, same signatures).

The venv is made once per content of clients/python (its files and the stubs it
ships, hashed) and kept under .venv/sdk-lean/; a change there makes a new one."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conveyor.kinds.api import seconds_of as kinds_seconds_of
from conveyor_client import AsyncConveyorClient, ConveyorClient
from conveyor_client._common import seconds_of
from tests.support.processes import Stack

REPO = Path(__file__).resolve().parents[1]
LEAN = REPO / "clients" / "python"
CACHE = REPO / ".venv" / "sdk-lean"
SKIP_DIRS = {"build", "__pycache__"}

#: What the venv may hold: the client, its dependencies, and what `python -m venv` brings.
ALLOWED = {"conveyor-client", "grpcio", "grpcio-status", "grpcio-health-checking", "protobuf",
           "googleapis-common-protos", "typing-extensions", "pip", "setuptools"}
SERVICE_ONLY = {"conveyor", "playwright", "dramatiq", "redis", "hiredis", "pydantic", "structlog"}


def _tree_hash() -> str:
    """What the wheel is made of: clients/python's files and the stubs (through the symlink)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(LEAN, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(root, name)
            digest.update(str(path.relative_to(LEAN)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CONVEYOR_")}


@pytest.fixture(scope="module")
def lean_python() -> Path:
    """The python of a venv that has had `pip install ./clients/python` and nothing else.

    One venv per Python version and clients/python/pyproject.toml (its dependencies);
    when the SDK's or the stubs' files change, the distribution alone is installed again."""
    made_for = hashlib.sha256(f"{sys.version_info[:2]}".encode() + (LEAN / "pyproject.toml").read_bytes())
    home = CACHE / made_for.hexdigest()[:16]
    python = home / "venv" / "bin" / "python"
    tree = _tree_hash()
    env = {**_clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time (parallel test runs)
        installed = home / "installed"
        if not installed.exists():
            for old in CACHE.iterdir():
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True, timeout=120, env=env)
            command = ["install", "-q", "./clients/python"]  # the README's command, as written
        elif installed.read_text() != tree:
            command = ["install", "-q", "--force-reinstall", "--no-deps", "./clients/python"]
        else:
            return python
        shutil.rmtree(LEAN / "build", ignore_errors=True)  # no stale files into the wheel
        done = subprocess.run([str(python), "-m", "pip", *command], check=False, cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=400)
        for litter in (LEAN / "build", LEAN / "conveyor_client.egg-info"):  # the in-tree build's
            shutil.rmtree(litter, ignore_errors=True)
        assert done.returncode == 0, done.stdout + done.stderr
        installed.write_text(tree)
    return python


def _run(python: Path, *args: str, timeout: float = 60, cwd: Path | None = None) -> str:
    done = subprocess.run([str(python), *args], check=False, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(450)
def test_the_lean_install_has_the_client_and_the_stubs_only(lean_python: Path) -> None:
    listed = json.loads(_run(lean_python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"))
    names = {re.sub(r"[-_.]+", "-", d["name"]).lower() for d in listed}
    assert "conveyor-client" in names
    assert not names & SERVICE_ONLY, names
    assert names <= ALLOWED, names - ALLOWED

    site = Path(_run(lean_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    top = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"}
    assert not top & {"clients", "gateway", "executor", "tests", "bench"}, top
    # `conveyor` holds only the stubs, as a namespace package: no file of the service's core.
    assert {p.name for p in (site / "conveyor").iterdir()} == {"v1"}
    record = (site / "conveyor_client-0.1.0.dist-info" / "RECORD").read_text()
    assert {line.split("/")[0] for line in record.splitlines()} == {
        "conveyor", "conveyor_client", "conveyor_client-0.1.0.dist-info"}
    # The stubs shipped are the repository's conveyor/v1, file for file.
    def stubs(d: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".py", ".pyi")}
    assert stubs(site / "conveyor" / "v1") == stubs(REPO / "conveyor" / "v1")
    # Importing the client loads nothing of the service (nor pydantic).
    loaded = _run(lean_python, "-c", "import sys, conveyor_client; print(' '.join(sorted(sys.modules)))").split()
    assert not {m.split(".")[0] for m in loaded} & {"gateway", "executor", "clients", "pydantic", "redis"}


def _readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### Python SDK\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 3, "the section shows a blocking and an asyncio example, then the JobWaiter's"
    return blocks


@pytest.mark.timeout(450)
@pytest.mark.parametrize("which", ["blocking", "asyncio", "waiter"])
def test_the_readme_examples_run_in_the_lean_venv(lean_python: Path, stack: Stack, tmp_path: Path,
                                                   which: str) -> None:
    """Each example as written (only the gateway's address changed): it submits a noop
    job and watches it to its end; the JobWaiter's submits five and learns each end
    from its stream."""
    code = _readme_examples()[["blocking", "asyncio", "waiter"].index(which)]
    assert "127.0.0.1:50051" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace("127.0.0.1:50051", stack.grpc_target), encoding="utf-8")
    lines = _run(lean_python, str(script), cwd=tmp_path).splitlines()
    if which == "waiter":
        assert [line.split()[1:] for line in lines[:-1]] == [["JOB_STATE_COMPLETED"]] * 5, lines
        assert len({line.split()[0] for line in lines[:-1]}) == 5, lines
        assert lines[-1] == "ends seen on the stream: 5 asked of WaitJob: 0", lines
        return
    assert lines[0].startswith("job: JOB_STATE_") and lines[-1] == "done: JOB_STATE_COMPLETED", lines
    events = [line.split()[1] for line in lines[1:-1]]
    assert all(line.startswith("event: ") for line in lines[1:-1]), lines
    if lines[0] != "job: JOB_STATE_COMPLETED":  # the watch went on to the end, the last change seen
        assert events and events[-1] == "JOB_STATE_COMPLETED", lines


def _unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", LEAN / "unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_blocking_client_is_generated_from_the_asyncio_one() -> None:
    unasync = _unasync()
    expected = unasync.transform(unasync.SOURCE.read_text(encoding="utf-8"))
    assert unasync.TARGET.read_text(encoding="utf-8") == expected, (
        "clients/python/conveyor_client/sync.py is stale: run python clients/python/unasync.py")


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: f for name, f in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") or name == "__init__"}


def _params(f: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(f).parameters.values()]


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    aio, sync = _methods(AsyncConveyorClient), _methods(ConveyorClient)
    assert sorted(aio) == sorted(sync)
    assert len(aio) > 30
    for name, fa in aio.items():
        fs = sync[name]
        assert _params(fa) == _params(fs), name
        returns_a = inspect.signature(fa).return_annotation
        returns_s = inspect.signature(fs).return_annotation
        if name == "__init__":
            assert returns_a == returns_s == "None"
        elif inspect.isasyncgenfunction(fa):  # an async iterator there, an iterator here
            assert inspect.isgeneratorfunction(fs), name
            assert returns_a.startswith("AsyncIterator[") and returns_s == returns_a.removeprefix("Async"), name
        else:  # awaitable there, the value here
            assert inspect.iscoroutinefunction(fa), name
            assert not inspect.iscoroutinefunction(fs) and not inspect.isgeneratorfunction(fs), name
            assert returns_s == returns_a, name
    assert inspect.iscoroutinefunction(AsyncConveyorClient.__aenter__)
    assert callable(ConveyorClient.__enter__) and callable(ConveyorClient.__exit__)


def test_the_sdk_reads_durations_as_the_kind_api_does() -> None:
    """The SDK parses retry durations itself (it does not import the service); the
    texts mean what they mean to `conveyor.kinds.Retry`."""
    for value in (0, 1.5, "2s", "500ms", "1.5m", "1h", " 3 ", "2 s", "0.25"):
        assert seconds_of(value) == kinds_seconds_of(value), value
    for bad in ("abc", "1d", "-1s", "", "s"):
        for parse in (seconds_of, kinds_seconds_of):
            with pytest.raises(ValueError):
                parse(bad)
