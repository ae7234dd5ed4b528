"""`conveyor-executor`: a supervisor of CONVEYOR_EXECUTOR_PROCESSES worker processes."""

from __future__ import annotations

import sys

from conveyor.logs import configure_logging
from conveyor.settings import load_settings
from executor.health_http import ExecutorEndpoint
from executor.supervisor import Supervisor


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="executor")
    # /metrics, /healthz and /readyz (CONVEYOR_EXECUTOR_METRICS_ADDR), before the workers start.
    endpoint = ExecutorEndpoint.from_settings(settings)
    supervisor = Supervisor(settings.executor_processes,
                            on_worker_exit=endpoint.worker_exited if endpoint is not None else None)
    if endpoint is None:
        sys.exit(supervisor.run())
    endpoint.start(supervisor)
    try:
        code = supervisor.run()
    finally:
        endpoint.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
