"""The Lua scripts of lua/ as one Redis function library: one file per command, each
with a header naming its arguments, replies and refusals, and the shared pieces it
needs pulled in from lua/includes/ by its `-- @include <name>` lines.

The library holds every include once (each after the pieces it includes itself) and
registers each command as a function of its own (`<command>_<version>`), called with
FCALL. What the includes define (some 100 local functions and tables) is made once,
when the library loads; as EVAL scripts, each call made it all again, 30-50 µs of
Redis's time per call. So a command's body starts with begin() (includes/base.lua),
and nothing of one call stays for the next.

The version is the library's own hash, in its name and its functions' names: services
of two versions on one Redis (a rolling upgrade) each call their own. A server that
lacks the library (restarted empty, failed over to a replica that never had it, or
after FUNCTION FLUSH) answers "Function not found", and the library is loaded
(FUNCTION LOAD REPLACE) and the call made again."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

LUA_DIR = Path(__file__).with_name("lua")
INCLUDES_DIR = LUA_DIR / "includes"
INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)
#: The commands: every lua/<name>.lua.
SCRIPT_NAMES = tuple(sorted(p.stem for p in LUA_DIR.glob("*.lua")))
LIBRARY_PREFIX = "conveyor_"
#: The placeholder for the version in the library's text, before it is hashed.
_VERSION = "@VERSION@"


def pieces(lua_dir: Path, names: Sequence[str]) -> list[tuple[str, str]]:
    """The commands `names` and the includes they need, each piece once and after the
    pieces it includes (a command after its includes): (path relative to `lua_dir`,
    text) each."""
    loaded: set[str] = set()
    out: list[tuple[str, str]] = []

    def load(path: Path) -> None:
        text = path.read_text()
        for include in INCLUDE.findall(text):
            if include not in loaded:
                loaded.add(include)
                load(lua_dir / "includes" / f"{include}.lua")
        out.append((str(path.relative_to(lua_dir)), text))

    for name in names:
        load(lua_dir / f"{name}.lua")
    return out


def function_name(command: str, version: str) -> str:
    return f"{command}_{version}"


def is_missing(reply: object) -> bool:
    """The error a server without the library answers an FCALL with."""
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


@dataclass(frozen=True)
class Library:
    """The scripts of a lua/ directory as one function library."""

    name: str
    version: str
    source: str

    def function(self, command: str) -> str:
        return function_name(command, self.version)

    def fcall(self, command: str, args: Sequence[Any]) -> tuple[Any, ...]:
        """The FCALL of `command` with `args` (the key prefix first), as a command."""
        return ("FCALL", self.function(command), 0, *args)

    def load_command(self) -> tuple[str, ...]:
        return ("FUNCTION", "LOAD", "REPLACE", self.source)

    @staticmethod
    def is_missing(reply: object) -> bool:
        return is_missing(reply)

    async def load(self, client: Any) -> None:
        await client.execute_command(*self.load_command())

    async def call(self, client: Any, command: str, args: Sequence[Any]) -> Any:
        """`command` on `client` (a redis-py client), loading the library first if the
        server lacks it."""
        try:
            return await client.execute_command(*self.fcall(command, args))
        except ResponseError as exc:
            if not is_missing(exc):
                raise
        await self.load(client)
        return await client.execute_command(*self.fcall(command, args))

    async def call_many(self, client: Any, command: str, arg_lists: Sequence[Sequence[Any]],
                        then: Sequence[Sequence[Any]] = ()) -> list[Any]:
        """`command` once per argument list, then the commands `then`, in one pipeline
        of `client` (a redis-py client): their replies in order, error replies as
        exceptions. A server that lacks the library has it loaded, and gets it all again."""
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for args in arg_lists:
                pipe.execute_command(*self.fcall(command, args))
            for extra in then:
                pipe.execute_command(*extra)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt or not any(is_missing(r) for r in replies[:len(arg_lists)]):
                break
            await self.load(client)
        return replies


def build_library(lua_dir: Path = LUA_DIR) -> Library:
    """The library of the commands in `lua_dir` (lua/, or a copy of it)."""
    parts: list[str] = []
    commands = {f"{name}.lua" for name in SCRIPT_NAMES}
    for path, text in pieces(lua_dir, SCRIPT_NAMES):
        if path not in commands:
            parts.append(f"-- ===== {path} =====\n{text}")
            continue
        command = path.removesuffix(".lua")
        parts.append(
            f"-- ===== {path} =====\n"
            f"redis.register_function('{function_name(command, _VERSION)}', function(_, call_args)\n"
            f"begin(call_args)\n{text}\nend)"
        )
    body = "\n".join(parts)
    version = hashlib.sha1(body.encode()).hexdigest()[:12]
    name = LIBRARY_PREFIX + version
    return Library(name, version, f"#!lua name={name}\n" + body.replace(_VERSION, version))


@cache
def library() -> Library:
    """The library of the package's own scripts."""
    return build_library(LUA_DIR)
