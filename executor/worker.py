"""One executor worker process: a Dramatiq worker whose threads (one per slot) run
the `run_job` actor on the process's single event loop, where the store client,
the browser pool, the heartbeat and the cancel listener live."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread
from dramatiq.middleware.asyncio import AsyncIO

from conveyor.logs import configure_logging
from conveyor.settings import Settings, load_settings
from conveyor.store.claim_taker import ClaimTaker
from conveyor.transport import RUN_JOB_ACTOR, TRANSPORT_QUEUE, make_broker, store_policy
from executor.runtime import ExecutorRuntime

log = structlog.get_logger("executor.worker")

#: How long a stopping worker lets running jobs finish before leaving them to be
#: recovered by the store (stall detection) on another executor.
STOP_GRACE_MS = 10_000


class RuntimeMiddleware(AsyncIO):
    """Dramatiq's AsyncIO middleware, plus starting and stopping the runtime on its loop."""

    def __init__(self, runtime: ExecutorRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        super().before_worker_boot(broker, worker)  # type: ignore[no-untyped-call]
        _loop_thread().run_coroutine(self.runtime.start())

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        _loop_thread().run_coroutine(self.runtime.stop())


def _loop_thread() -> EventLoopThread:
    thread = get_event_loop_thread()
    if thread is None:
        raise RuntimeError("the AsyncIO middleware has not started its event loop")
    return thread


def build_worker(settings: Settings, worker_index: int) -> tuple[dramatiq.Worker, ExecutorRuntime]:
    runtime = ExecutorRuntime(settings, worker_index=worker_index)
    broker = make_broker(settings.effective_redis_url, settings.key_prefix, middleware=[RuntimeMiddleware(runtime)])
    # The consumer claims jobs as it takes their messages (one script for both), and
    # the store acknowledges a delivery as it finishes its job.
    taker = ClaimTaker(
        redis.Redis.from_url(settings.effective_redis_url, client_name="conveyor-executor-take"),
        settings.key_prefix, store_policy(settings),
    )

    def take(count: int, worker_id: str) -> list[bytes]:
        taken = taker.take(count, worker_id, runtime.executor_id, runtime.stall_ms)
        for message in taken:
            if message.claim is not None:
                runtime.taken[(message.claim.job_id, message.claim.attempt)] = message.claim
        return [message.data for message in taken]

    broker.takers[TRANSPORT_QUEUE] = take
    runtime.acked_by_store = broker.acked_by_store

    async def run_job(job_id: str, attempt: int) -> None:
        await runtime.run(job_id, attempt)

    dramatiq.actor(actor_name=RUN_JOB_ACTOR, queue_name=TRANSPORT_QUEUE, broker=broker)(run_job)
    worker = dramatiq.Worker(broker, worker_threads=settings.executor_slots, worker_timeout=1000)
    # Take no more messages than there are slots: admission already hands over
    # exactly as many jobs as executors have free slots.
    worker.queue_prefetch = settings.executor_slots
    return worker, runtime


def run_worker(worker_index: int) -> None:
    # The GIL keeps Python's default 5 ms switch interval: a shorter one (0.5 ms was
    # tried) cost ~15% more CPU per job under load, and bought no latency (an idle
    # worker's threads are blocked, not holding the GIL; submit -> claimed p50 3.5 ms).
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="executor")
    structlog.contextvars.bind_contextvars(worker=worker_index)
    worker, _ = build_worker(settings, worker_index)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    log.info("worker stopping")
    worker.stop(timeout=STOP_GRACE_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description="One Conveyor executor worker process.")
    parser.add_argument("--index", type=int, default=0)
    run_worker(parser.parse_args().index)


if __name__ == "__main__":
    main()
