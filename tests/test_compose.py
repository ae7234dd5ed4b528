"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the file
parses, every command exists in the package, and the settings the services need
(AOF, volumes, init, shared memory, scalability) are there."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clients.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(pyproject["project"]["scripts"])


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_the_three_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "gateway", "executor"}


def test_every_command_is_a_console_script_or_redis(compose: dict[str, Any], scripts: dict[str, str]) -> None:
    for name, service in compose["services"].items():
        argv = _argv(service["command"])
        assert argv[0] in scripts or argv[0] == "redis-server", f"{name}: {argv[0]} is not in [project.scripts]"


def test_every_console_script_resolves(scripts: dict[str, str]) -> None:
    """`module:function` of each script imports and is callable."""
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        func = getattr(importlib.import_module(module), attr)
        assert callable(func), name


def test_redis_has_aof_and_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    argv = _argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert re.match(r"redis:7(\b|-|\.)", redis["image"])
    volumes = [v.split(":") for v in redis["volumes"]]
    assert ["redis-data", "/data"] in volumes
    assert "redis-data" in compose["volumes"]


def test_gateway_listens_in_its_container_with_auth_and_is_published_on_loopback(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    env = _env(gateway)
    assert env["CONVEYOR_GRPC_ADDR"] == "0.0.0.0:50051"
    assert env["CONVEYOR_REDIS_URL"] == "redis://redis:6379/0"
    # Auth on, the admin key from the environment (compose refuses to start without it).
    assert env["CONVEYOR_AUTH"] == "on" and env["CONVEYOR_ADMIN_KEY"].startswith("${CONVEYOR_ADMIN_KEY:?")
    assert [str(p) for p in gateway["ports"]] == ["127.0.0.1:50051:50051"]


def test_executor_is_scalable_with_init_and_shared_memory(compose: dict[str, Any]) -> None:
    executor = compose["services"]["executor"]
    assert executor["init"] is True
    assert executor["shm_size"] in ("1gb", "1g", "1024m") or str(executor["shm_size"]).endswith(("gb", "g"))
    assert "container_name" not in executor
    assert "ports" not in executor  # a published port would clash at --scale executor=2
    assert _env(executor)["CONVEYOR_REDIS_URL"] == "redis://redis:6379/0"


def test_gateway_and_executors_share_the_artifacts(compose: dict[str, Any]) -> None:
    """The gateway serves the screenshots the executors write."""
    mounts = {
        name: {v.split(":")[1]: v.split(":")[0] for v in compose["services"][name].get("volumes", [])}
        for name in ("gateway", "executor")
    }
    art = _env(compose["services"]["executor"]).get("CONVEYOR_ARTIFACT_DIR", "/artifacts")
    assert mounts["gateway"][art] == mounts["executor"][art] == "artifacts"
    assert "artifacts" in compose["volumes"]


def test_healthcheck_commands_exist(compose: dict[str, Any], scripts: dict[str, str]) -> None:
    gateway_check = compose["services"]["gateway"]["healthcheck"]["test"]
    assert gateway_check[0] == "CMD"
    assert gateway_check[1] in scripts
    args = build_parser().parse_args(gateway_check[2:])
    assert args.command == "health"
    assert args.target == "127.0.0.1:50051"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim-bookworm"
    install = text[text.index("apt-get install") :].split("&&")[0]
    assert re.search(r"\bchromium\b", install)
    assert "fonts-" in text
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # Everything it copies exists, and the package's code is all copied.
    copied = {src for line in lines if line.startswith("COPY ") for src in line.split()[1:-1]}
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"the image lacks the {pattern} package"
