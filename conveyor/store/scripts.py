"""Loads the Lua scripts of lua/ (each prefixed with lua/_lib.lua) into a client."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript

LUA_DIR = Path(__file__).with_name("lua")
SCRIPT_NAMES = (
    "submit", "dispatch", "take", "claim", "ack", "heartbeat", "progress", "finish",
    "cancel", "retry", "promote", "reap", "get",
    "queue_update", "clean", "retry_failed",
    "schedule_create", "schedule_fire", "schedule_delete", "schedule_pause", "schedule_resume",
)


@cache
def script_source(name: str) -> str:
    prelude = (LUA_DIR / "_lib.lua").read_text()
    return f"{prelude}\n-- ===== {name}.lua =====\n{(LUA_DIR / f'{name}.lua').read_text()}"


def register_scripts(client: Any) -> dict[str, AsyncScript]:
    return {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
