"""`conveyor-executor`: a supervisor of CONVEYOR_EXECUTOR_PROCESSES worker processes."""

from __future__ import annotations

import sys

from conveyor.logs import configure_logging
from conveyor.settings import load_settings
from executor.supervisor import Supervisor


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="executor")
    sys.exit(Supervisor(settings.executor_processes).run())


if __name__ == "__main__":
    main()
