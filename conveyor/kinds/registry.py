"""The registry of job kinds: the one place to look for what kinds exist.

An executor loads the built-in kinds (every module of BUILTIN_PACKAGE: one module
per kind, so adding one is adding its module), the modules named in CONVEYOR_KINDS,
and the modules of the `conveyor.kinds` entry point group; each module registers its
kinds with @job_kind as it is imported. It serves all of them, or those named in
CONVEYOR_EXECUTOR_KINDS, and publishes what it serves to the store as KindSpecs
(name, input JSON Schema, defaults): the gateway validates jobs against those without
importing anyone's code.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any

from conveyor.kinds.api import KIND_NAME, Kind

#: The package of the built-in kinds, one module each (their handlers live in the executor).
BUILTIN_PACKAGE = "executor.kinds"
#: Kinds whose input is a message of the contract (a SubmitJobRequest oneof field),
#: not JSON: the gateway validates them with the contract's own rules.
TYPED_KINDS = frozenset({"noop", "browser"})
ENTRY_POINT_GROUP = "conveyor.kinds"


class KindError(ValueError):
    """A kind that cannot be registered or loaded."""


@dataclass(frozen=True)
class KindSpec:
    """What an executor publishes of a kind it serves, and what the gateway knows of it."""

    name: str
    input_schema: dict[str, Any]
    max_attempts: int = 0  # 0: the server default
    timeout_ms: int = 0  # 0: the server default
    browser: bool = False
    typed: bool = False
    description: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KindSpec:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def of(cls, kind: Kind) -> KindSpec:
        return cls(
            name=kind.name, input_schema=kind.input_schema(),
            max_attempts=kind.retry.attempts if kind.retry else 0,
            timeout_ms=int(kind.timeout_seconds * 1000) if kind.timeout_seconds else 0,
            browser=kind.browser, typed=kind.typed, description=kind.description.split("\n\n", 1)[0],
        )


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}

    def add(self, kind: Kind) -> None:
        if not KIND_NAME.match(kind.name):
            raise KindError(f"kind name {kind.name!r}: lowercase letters, digits, '.', '_' and '-', "
                            "starting with a letter, at most 64")
        if kind.typed != (kind.name in TYPED_KINDS):
            raise KindError(f"kind {kind.name!r}: only {sorted(TYPED_KINDS)} are typed by the contract")
        existing = self._kinds.get(kind.name)
        if existing is not None and existing.handler is not kind.handler:
            raise KindError(f"kind {kind.name!r} is registered twice ({existing.module} and {kind.module})")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def __iter__(self) -> Iterator[Kind]:
        return iter(sorted(self._kinds.values(), key=lambda k: k.name))

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def serving(self, only: Iterable[str] = ()) -> list[Kind]:
        """The kinds to serve: all, or those named (each must be registered)."""
        wanted = list(only)
        if not wanted:
            return list(self)
        unknown = sorted(set(wanted) - set(self._kinds))
        if unknown:
            raise KindError(f"CONVEYOR_EXECUTOR_KINDS names kinds that no loaded module registers: {unknown} "
                            f"(registered: {self.names()})")
        return [self._kinds[name] for name in sorted(set(wanted))]


#: The registry @job_kind registers into.
default_registry = KindRegistry()


def load_kinds(modules: Iterable[str] = (), *, registry: KindRegistry | None = None,
               entry_point_group: str = ENTRY_POINT_GROUP) -> KindRegistry:
    """Import the built-in kinds, then `modules` (dotted names, e.g. from CONVEYOR_KINDS)
    and the modules of the entry point group; their @job_kind decorators fill the
    registry."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    builtins = [f"{BUILTIN_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.ispkg]
    for name in (*builtins, *modules):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise KindError(f"cannot import kind module {name!r}: {exc}") from exc
    for ep in entry_points(group=entry_point_group):
        try:
            ep.load()
        except ImportError as exc:
            raise KindError(f"cannot load kind entry point {ep.name!r} ({ep.value}): {exc}") from exc
    return registry or default_registry
