"""Loads the Lua scripts of lua/ into a client: one file per command, each with a
header naming its arguments, replies and refusals, and the shared pieces it needs
pulled in from lua/includes/ by its `-- @include <name>` lines (each piece once,
after the pieces it includes itself)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript

LUA_DIR = Path(__file__).with_name("lua")
INCLUDES_DIR = LUA_DIR / "includes"
INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)
#: The commands: every lua/<name>.lua.
SCRIPT_NAMES = tuple(sorted(p.stem for p in LUA_DIR.glob("*.lua")))


def assemble(lua_dir: Path, name: str) -> str:
    """Command `name` of the scripts in `lua_dir` (lua/, or a copy of it) with its
    includes in front of it, each once, every piece after the pieces it includes."""
    loaded: set[str] = set()
    parts: list[str] = []

    def load(path: Path) -> None:
        text = path.read_text()
        for include in INCLUDE.findall(text):
            if include not in loaded:
                loaded.add(include)
                load(lua_dir / "includes" / f"{include}.lua")
        parts.append(f"-- ===== {path.relative_to(lua_dir)} =====\n{text}")

    load(lua_dir / f"{name}.lua")
    return "\n".join(parts)


@cache
def script_source(name: str) -> str:
    """A command's script, assembled (see assemble)."""
    return assemble(LUA_DIR, name)


def register_scripts(client: Any) -> dict[str, AsyncScript]:
    return {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
