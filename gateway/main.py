"""`conveyor-gateway`: one gateway process, configured from the environment."""

from __future__ import annotations

import asyncio
import sys

import structlog
from redis.exceptions import RedisError

from conveyor.logs import configure_logging
from conveyor.settings import load_settings
from gateway.server import InsecureBinding, serve

log = structlog.get_logger("gateway")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    try:
        asyncio.run(serve(settings))
    except (InsecureBinding, RedisError, OSError, RuntimeError) as err:
        # What keeps it from starting, said in one line (the store unreachable or
        # refusing its user, unreadable TLS files, serving beyond loopback without auth).
        log.error("gateway cannot start", error=f"{type(err).__name__}: {err}")
        sys.exit(1)


if __name__ == "__main__":
    main()
