"""Job files for `conveyor submit`: JSON or YAML in the protobuf JSON mapping of
SubmitJobRequest, one request, or a batch (`{"requests": [...]}` or a list)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from conveyor.v1 import job_service_pb2
from conveyor_client import to_submit_request


class JobFileError(ValueError):
    """The file cannot be read or is not a valid request; the message says where."""


def read_job_file(path: str, stdin: TextIO | None = None) -> list[job_service_pb2.SubmitJobRequest]:
    """The requests in `path` ("-" for stdin), in order."""
    name = "<stdin>" if path == "-" else path
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from err
    return parse_job_text(text, name)


def parse_job_text(text: str, name: str = "<input>") -> list[job_service_pb2.SubmitJobRequest]:
    data = _load(text, name)
    if isinstance(data, dict) and set(data) == {"requests"}:
        data = data["requests"]
    if isinstance(data, list):
        if not data:
            raise JobFileError(f"{name}: the list of requests is empty")
        return [_request(item, f"{name}: requests[{i}]") for i, item in enumerate(data)]
    return [_request(data, name)]


def _load(text: str, name: str) -> Any:
    if not text.strip():
        raise JobFileError(f"{name}: the file is empty")
    suffix = Path(name).suffix.lower()
    if suffix not in {".yaml", ".yml"}:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            if suffix == ".json" or text.lstrip().startswith(("{", "[")):
                raise JobFileError(
                    f"{name}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
                ) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise JobFileError(f"{name}: not valid YAML: {problem}{where}") from err


def _request(data: Any, where: str) -> job_service_pb2.SubmitJobRequest:
    if not isinstance(data, dict):
        raise JobFileError(f"{where}: expected an object (a SubmitJobRequest), got {type(data).__name__}")
    try:
        return to_submit_request(data)
    except ValueError as err:
        raise JobFileError(f"{where}: {err}") from err
