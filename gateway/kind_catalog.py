"""The kinds the gateway knows: those the executors published to the store (name,
input JSON Schema, defaults), read without importing anyone's code, and the checks of
a job's `kind` task against them (the JSON path of what does not fit)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from google.protobuf import json_format
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from conveyor.errors import FieldViolation
from conveyor.kinds import KindSpec
from conveyor.kinds.api import KIND_NAME
from conveyor.kinds.registry import TYPED_KINDS
from conveyor.store.job_store import JobStore
from conveyor.v1 import task_pb2

#: How long the catalog trusts what it read (a kind published since is looked up again at once).
FRESH_SECONDS = 2.0
#: At most this often a kind nobody published sends the catalog back to the store.
MISS_SECONDS = 0.5
#: The most schema violations one input gets reported.
MAX_INPUT_VIOLATIONS = 10


class KindCatalog:
    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._specs: dict[str, KindSpec] = {}
        self._validators: dict[str, tuple[KindSpec, Draft202012Validator]] = {}
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self, min_age: float) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at >= min_age:
                self._specs = await self._store.published_kinds()
                self._read_at = time.monotonic()

    async def get(self, name: str) -> KindSpec | None:
        """The kind as its executors published it; None when none ever did."""
        if time.monotonic() - self._read_at >= FRESH_SECONDS:
            await self._refresh(FRESH_SECONDS)
        if name not in self._specs:
            await self._refresh(MISS_SECONDS)
        return self._specs.get(name)

    def _validator(self, spec: KindSpec) -> Draft202012Validator:
        cached = self._validators.get(spec.name)
        if cached is None or cached[0] != spec:
            cached = (spec, Draft202012Validator(spec.input_schema))
            self._validators[spec.name] = cached
        return cached[1]

    async def check(self, task: task_pb2.KindTask, path: str) -> tuple[KindSpec | None, list[FieldViolation]]:
        """The kind of a `kind` task, and what is wrong with the task (field paths
        under `path`, e.g. "kind.input.maxPages")."""
        name = task.name
        if not KIND_NAME.match(name):
            return None, [FieldViolation(f"{path}.name", "a kind's name: lowercase letters, digits, '.', '_', '-', "
                                                         "starting with a letter, at most 64")]
        if name in TYPED_KINDS:
            return None, [FieldViolation(f"{path}.name", f"{name} jobs are given as the {name!r} task, "
                                                         f"not as a kind")]
        spec = await self.get(name)
        if spec is None:
            return None, [FieldViolation(f"{path}.name", f"no executor has registered the kind {name!r}",
                                         reason="KIND_NOT_FOUND")]
        data = json_format.MessageToDict(task.input)
        try:
            errors = sorted(self._validator(spec).iter_errors(data), key=lambda e: list(e.absolute_path))
        except SchemaError:
            return spec, []  # a schema jsonschema cannot read: the executor's own parsing decides
        return spec, [
            FieldViolation(_json_path(f"{path}.input", error.absolute_path), _short(error.message))
            for error in errors[:MAX_INPUT_VIOLATIONS]
        ]


def _json_path(base: str, parts: Any) -> str:
    out = base
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
