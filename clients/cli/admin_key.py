"""The embedded stack's admin key: `conveyor up` makes one on first start and keeps
it in its data directory, readable only by its user, and the CLI on the same machine
picks it up for a gateway on loopback (never sent anywhere else)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from conveyor.net import is_loopback
from conveyor.settings import Settings

ADMIN_KEY_FILE = "admin.key"


def default_data_dir() -> Path:
    """Where `conveyor up` keeps its data by default (CONVEYOR_DATA_DIR, as the
    services read it)."""
    return Settings().data_dir


def ensure_admin_key(data_dir: Path) -> str:
    """The admin key kept in `data_dir`, made (mode 0600) if there is none yet."""
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = f"cvk_admin_{secrets.token_urlsafe(32)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def local_admin_key(target: str, data_dir: Path | None = None) -> str | None:
    """The local stack's admin key, for a target on this machine; None otherwise."""
    if not is_loopback(target):
        return None
    path = (data_dir or default_data_dir()) / ADMIN_KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def api_key_of(args: object) -> str | None:
    """The key a CLI command sends: --api-key / CONVEYOR_API_KEY, else the local
    stack's admin key for a gateway on this machine."""
    given = getattr(args, "api_key", None)
    return given or local_admin_key(str(getattr(args, "target", "")))
