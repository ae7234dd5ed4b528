"""One executor worker process: one event loop, home of the store client, the browser
pool, the heartbeat and cancel listener, and the consumer that runs the `run_job`
actor's messages on it, up to CONVEYOR_EXECUTOR_SLOTS at a time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import dramatiq
import structlog

from conveyor import event_loop, tracing
from conveyor.logs import configure_logging
from conveyor.redis_connection import connect
from conveyor.settings import Settings, load_settings
from conveyor.transport import RUN_JOB_ACTOR, TRANSPORT_QUEUE, make_broker
from executor.consumer import QueueConsumer
from executor.metrics import worker_runtime
from executor.runtime import ExecutorRuntime

log = structlog.get_logger("executor.worker")

#: How long a stopping worker lets running jobs finish before leaving them to be
#: recovered by the store (stall detection) on another executor.
STOP_GRACE_SECONDS = 10.0


def declare_actor(runtime: ExecutorRuntime, broker: dramatiq.Broker) -> None:
    """`run_job(job_id, attempt)`, the one actor of the transport queue."""

    async def run_job(job_id: str, attempt: int) -> None:
        await runtime.run(job_id, attempt)

    dramatiq.actor(actor_name=RUN_JOB_ACTOR, queue_name=TRANSPORT_QUEUE, broker=broker)(run_job)


async def serve(settings: Settings, worker_index: int, stop: asyncio.Event) -> None:
    """Run the worker until `stop` is set, then stop it gracefully."""
    tracing.setup(settings, "conveyor-executor")  # CONVEYOR_TRACING=on: attempt and step spans
    runtime = worker_runtime(settings, worker_index)  # counted when the executor serves metrics
    broker = make_broker(settings.effective_redis_url, settings.key_prefix)
    declare_actor(runtime, broker)
    await runtime.start()
    wake = connect(settings.effective_redis_url, max_connections=2, client_name="conveyor-executor-wake")
    consumer = QueueConsumer(runtime, broker, TRANSPORT_QUEUE, wake)
    runtime.take_with_finishes(consumer)
    consuming = asyncio.create_task(consumer.run(), name="consumer")
    try:
        await stop.wait()
        log.info("worker stopping")
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        await consumer.drain(STOP_GRACE_SECONDS)
        await wake.aclose()
        await runtime.stop()
        broker.close()
        await tracing.shutdown()


async def _main(settings: Settings, worker_index: int) -> None:
    configure_logging(settings.log_level, settings.log_format, service="executor")
    structlog.contextvars.bind_contextvars(worker=worker_index)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, worker_index, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="One Conveyor executor worker process.")
    parser.add_argument("--index", type=int, default=0)
    settings = load_settings()
    event_loop.run(_main(settings, parser.parse_args().index), settings.event_loop)


if __name__ == "__main__":
    main()
