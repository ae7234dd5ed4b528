"""Dramatiq as Conveyor's transport: the gateway hands jobs over as messages that
carry only (job id, attempt); the executor's actor loads the job from the store.

Dramatiq's Redis consumer polls an idle queue with a growing sleep (up to the
worker timeout, a second by default). Here an idle consumer instead blocks on a
per-queue *wake list* (BLPOP), and the handoff pushes to it after enqueueing, so an
idle executor picks a job up within milliseconds without busy polling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from conveyor.store.records import Handover

#: The one Dramatiq queue every Conveyor job travels on. Conveyor's own queues,
#: priorities and limits are decided by admission in the store, not here.
TRANSPORT_QUEUE = "conveyor-jobs"
RUN_JOB_ACTOR = "run_job"
#: Longest an idle consumer blocks before re-checking (shutdown, missed wakes).
IDLE_BLOCK_SECONDS = 1.0
#: Wake tokens kept at most: more would only wake consumers for nothing.
MAX_WAKE_TOKENS = 64


def wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.wake"


class WakeableRedisBroker(RedisBroker):
    """A RedisBroker whose idle consumers sleep on a wake list instead of polling.

    Dramatiq's own recovery of a dead worker's unacked messages is tuned down from
    60 s to `heartbeat_timeout` (Conveyor also recovers stalled jobs in its store).
    """

    def __init__(self, *, url: str, heartbeat_timeout_ms: int = 15_000, **kwargs: Any) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            url=url,
            heartbeat_timeout=heartbeat_timeout_ms,
            # Maintenance (requeueing dead workers' messages) runs on ~1% of commands.
            maintenance_chance=10_000,
            **kwargs,
        )

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeableConsumer

    def wake(self, queue_name: str, count: int) -> None:
        """Wake up to `count` idle consumers of `queue_name`."""
        if count <= 0:
            return
        key = wake_key(self.namespace, queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, *(["1"] * min(count, MAX_WAKE_TOKENS)))
        pipe.ltrim(key, 0, MAX_WAKE_TOKENS - 1)
        pipe.execute()


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer with the idle sleep replaced by a BLPOP on the wake list."""

    def __init__(self, broker: WakeableRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._wake_key = wake_key(broker.namespace, queue_name)
        # A connection of its own, so blocking never holds one of the broker's.
        pool = broker.client.connection_pool
        self._wake_client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs
            )
        )

    def __next__(self) -> Any:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                messages = []
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = messages = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if messages:
                    continue
                if self.outstanding_message_count >= self.prefetch:
                    # Full: wait for our own work to finish, as Dramatiq does.
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
                self._wake_client.blpop([self._wake_key], timeout=IDLE_BLOCK_SECONDS)
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        try:
            self._wake_client.close()
        finally:
            super().close()


def make_broker(url: str, key_prefix: str, *, middleware: list[Any] | None = None) -> WakeableRedisBroker:
    """The broker both services use. Its keys live beside the store's (one Redis can
    hold several Conveyor deployments, each with its own prefix). Middleware is the
    executor's choice: none of Dramatiq's defaults, since retries and time limits
    are Conveyor's own."""
    return WakeableRedisBroker(url=url, namespace=f"{key_prefix}:dramatiq", middleware=middleware or [])


class Handoff:
    """Gives handed-over jobs to the executors as Dramatiq messages (sync; the
    gateway calls it from a worker thread)."""

    def __init__(self, broker: WakeableRedisBroker) -> None:
        self.broker = broker
        broker.declare_queue(TRANSPORT_QUEUE)

    def send(self, handovers: Sequence[Handover]) -> None:
        for h in handovers:
            message: Message[Any] = Message(
                queue_name=TRANSPORT_QUEUE,
                actor_name=RUN_JOB_ACTOR,
                args=(h.job_id, h.attempt),
                kwargs={},
                options={},
            )
            self.broker.enqueue(message)
        self.broker.wake(TRANSPORT_QUEUE, len(handovers))
