"""`conveyor-gateway`: one gateway process, configured from the environment."""

from __future__ import annotations

import asyncio

from conveyor.logs import configure_logging
from conveyor.settings import load_settings
from gateway.server import serve


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
